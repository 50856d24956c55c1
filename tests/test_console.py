"""What a run prints: the run folder, the scenario, the progress bar, the metric table and where
the results went; nothing twice, no advertising, no raw colour codes. And a resumed run continues
its W&B run instead of starting a second one."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from recmig.loggers import resumed_run_id
from tests.conftest import custom_table_overrides
from tests.test_cli import recmig

FORBIDDEN = {
    "litlogger": "Lightning's cloud-logger tip",
    "was configured so": "the echo of a default trainer setting",
    "FLOPs": "the model summary's FLOPs column (0: recmig modules take batches)",
    "weights_only": "Lightning's checkpoint default, which reads like a safety warning",
    "anonymous setting": "W&B's deprecation warning for an argument Lightning passes",
    "wandb leet": "W&B's terminal-viewer tip",
    "\x1b[": "raw ANSI colour codes in output that is not a terminal",
    "srun": "Lightning's SLURM hint for single-device jobs",
}
EXPECTED = ("run folder: ", "scenario: ", "test metrics (", "results in ")


def _check_console(output: str) -> None:
    for needle, what in FORBIDDEN.items():
        assert needle not in output, f"console shows {what}: {needle!r}\n{output[-3000:]}"
    for needle in EXPECTED:
        assert needle in output, f"console lacks {needle!r}\n{output[-3000:]}"
    # Log lines without their time stamp: none may be printed twice (Lightning's were).
    messages = [line.split("] - ", 1)[1] for line in output.splitlines() if "] - " in line]
    repeated = [m for m, n in Counter(messages).items() if n > 1]
    assert not repeated, f"printed twice: {repeated}"


@pytest.mark.slow
def test_a_default_one_batch_run_prints_only_what_a_user_needs(tmp_path):
    run = tmp_path / "run"
    result = recmig("train", "debug=one_batch", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_console(result.stdout + result.stderr)
    # Lightning's INFO lines are kept, once, in the run's log file.
    log = (run / "cli.log").read_text()
    assert log.count("GPU available") == 1


def test_a_closed_form_run_with_wandb_prints_only_what_a_user_needs(tmp_path, data):
    run = tmp_path / "run"
    data_overrides = custom_table_overrides(tmp_path, data)
    args = [*data_overrides, "strategy=ease", "logger=wandb", f"hydra.run.dir={run}"]
    result = recmig("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_console(result.stdout + result.stderr)
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run"


def test_a_resumed_run_continues_its_wandb_run(tmp_path, data):
    """Resumed in its own folder and into a new one: one W&B run id throughout."""
    run = tmp_path / "run"
    base = [
        *custom_table_overrides(tmp_path, data),
        "encoder=id",
        "logger=wandb",
        "loader.batch_size=64",
    ]
    first = recmig("train", *base, "trainer.max_epochs=1", f"hydra.run.dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (original,) = [p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")]
    last = run / "checkpoints" / "last.ckpt"
    for folder in (run, tmp_path / "elsewhere"):
        resumed = recmig(
            "train",
            *base,
            "trainer.max_epochs=2",
            f"resume={last}",
            f"hydra.run.dir={folder}",
            cwd=tmp_path,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        ids = {p.name.rsplit("-", 1)[1] for p in (folder / "wandb").glob("offline-run-*")}
        assert ids == {original}


def test_resumed_run_id_reads_the_run_a_checkpoint_belongs_to(tmp_path):
    old = tmp_path / "old"
    first = old / "wandb" / "offline-run-20260101_000000-aaaa1111"
    first.mkdir(parents=True)
    (old / "wandb" / "offline-run-20260102_000000-bbbb2222").mkdir()
    (old / "wandb" / "latest-run").symlink_to(first)
    ckpt = old / "checkpoints" / "last.ckpt"
    assert resumed_run_id(tmp_path / "new", ckpt) == "bbbb2222"  # newest of the old run's
    assert resumed_run_id(tmp_path / "new", None) is None  # not resumed: a new W&B run
    assert resumed_run_id(old, None) is None  # a rerun in the same folder is a new run too
    mine = Path(tmp_path / "new" / "wandb" / "offline-run-20260103_000000-cccc3333")
    mine.mkdir(parents=True)
    assert resumed_run_id(tmp_path / "new", ckpt) == "cccc3333"  # resumed in place: its own
