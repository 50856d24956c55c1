"""Reliability of a run: a killed run resumes to the numbers it would have reached, the same
config and seed give the same numbers, checkpoints hold no pickled code, and W&B never waits
on a network. Every run is `recmig train` on the tiny synthetic two-domain data."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import custom_table_overrides, synthetic_data
from omegaconf import OmegaConf, open_dict

from recmig.config import compose_config
from recmig.train import train

TIMEOUT = 900
"""Seconds any one run may take: the tiny runs take well under a minute."""


def _env(**changes: str | None) -> dict[str, str]:
    """The test environment for a run: one thread, no Hugging Face downloads, no W&B settings
    of whoever runs the tests; ``None`` removes a variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update({k: v for k, v in changes.items() if v is not None})
    for key in [k for k, v in changes.items() if v is None]:
        env.pop(key, None)
    return env


def _data_overrides(tmp_path: Path, data) -> list[str]:
    """The synthetic data as your own files (Books source, Films target), own cache."""
    return [*custom_table_overrides(tmp_path, data), f"paths.cache_dir={tmp_path / 'cache'}"]


def _command(out: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "recmig.cli", "train", f"hydra.run.dir={out}", *overrides]


def _train(out: Path, *overrides: str, env: dict[str, str] | None = None) -> dict[str, float]:
    result = subprocess.run(
        _command(out, *overrides),
        cwd=out.parent,
        env=env or _env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def _scores(metrics: dict[str, float]) -> dict[str, float]:
    """Every validation and test value of a run (timings differ between runs)."""
    return {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}


def _kill_inside_a_later_epoch(out: Path, *overrides: str) -> Path:
    """Start a run, SIGKILL it half an epoch after ``last.ckpt`` was written for the second
    time (so inside the epoch after it), and return that checkpoint."""
    last = out / "checkpoints" / "last.ckpt"
    with (out.parent / f"{out.name}.log").open("w") as log:
        run = subprocess.Popen(
            _command(out, *overrides),
            cwd=out.parent,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        writes: list[tuple[int, float]] = []  # (mtime, when seen) of each new last.ckpt
        deadline = time.monotonic() + TIMEOUT
        while run.poll() is None and time.monotonic() < deadline and len(writes) < 2:
            if last.exists():
                stamp = last.stat().st_mtime_ns
                if not writes or writes[-1][0] != stamp:
                    writes.append((stamp, time.monotonic()))
            time.sleep(0.005)
        assert run.poll() is None, "the run ended before it could be killed"
        time.sleep((writes[1][1] - writes[0][1]) / 2)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    return last


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_metrics(tmp_path, data):
    """SIGKILL inside epoch 2 of 4, then ``resume=<last.ckpt>`` into the same run folder: the
    same metrics as the run that was never stopped. Needs the batch order, dropout, the optimizer,
    the best checkpoint and early stopping's patience to continue where they were."""
    run = [
        *_data_overrides(tmp_path, data),
        "encoder=id",
        "logger=csv",
        "+logger.csv.flush_logs_every_n_steps=1",  # every step on disk before the kill
        "trainer.log_every_n_steps=1",
        "trainer.max_epochs=4",
        "loader.batch_size=1",  # ~50 steps an epoch: room to land inside one
        "seed=1",  # (its best validation epoch is the last one, after the kill)
    ]
    uninterrupted = _train(tmp_path / "whole", *run)

    out = tmp_path / "killed"
    last = _kill_inside_a_later_epoch(out, *run)
    saved = torch.load(last, weights_only=True)
    steps = list(csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open()))
    logged = max(int(r["step"]) for r in steps if r.get("train/loss"))
    # Killed inside a later epoch: it had trained steps the checkpoint does not hold.
    assert saved["epoch"] < 3 and logged > saved["global_step"]

    resumed = _train(out, *run, f"resume={last}")
    assert resumed["epochs"] == uninterrupted["epochs"]
    expected = _scores(uninterrupted)
    assert set(_scores(resumed)) == set(expected)
    for key, value in expected.items():
        assert resumed[key] == pytest.approx(value, abs=1e-6), key
    # And the same weights at the end, whichever epoch the metrics came from.
    weights = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    final = torch.load(last, weights_only=True)
    for name, tensor in weights["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=0, atol=1e-6)


def _train_here(out: Path, overrides: list[str]) -> dict[str, float]:
    """``recmig.train.train`` in this process, as a notebook or script would call it."""
    cfg = compose_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    # The composed config where Hydra keeps it: the folder is a finished run like any other.
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    return train(cfg)


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory) -> list[Path]:
    """target_only with the default item encoder (the real MiniLM, embeddings cached by the
    first run, read back by the second) and user model (SASRec, dropout on), trained twice
    with one config and seed."""
    tmp = tmp_path_factory.mktemp("text_runs")
    overrides = [
        *_data_overrides(tmp, synthetic_data()),
        "strategy=target_only",
        "logger=none",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "loader.batch_size=8",
        "seed=4",
    ]
    runs = [tmp / "first", tmp / "second"]
    for out in runs:
        _train_here(out, overrides)
    return runs


def test_the_same_config_and_seed_give_the_same_metrics(text_runs):
    first, second = (json.loads((run / "metrics.json").read_text()) for run in text_runs)
    assert _scores(first) and _scores(first) == _scores(second)  # every value, exactly
    users = [pd.read_parquet(run / "test_users.parquet") for run in text_runs]
    assert users[0]["top"].map(list).tolist() == users[1]["top"].map(list).tolist()


def test_every_checkpoint_a_run_writes_loads_as_plain_tensors(text_runs, tmp_path, data):
    """Best and last checkpoints of a trained run, and a closed-form run's fitted one, load
    with ``weights_only=True``: nothing in them needs unpickling code."""
    written = sorted((text_runs[0] / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in written if p.name.startswith("best-")] and any(
        p.name == "last.ckpt" for p in written
    )
    _train_here(
        tmp_path / "ease", [*_data_overrides(tmp_path, data), "strategy=ease", "logger=none"]
    )
    written += sorted((tmp_path / "ease" / "checkpoints").glob("*.ckpt"))
    assert written[-1].name == "best-fitted.ckpt"
    for path in written:
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["state_dict"], path


class _Planted:
    """Unpickling this creates the folder it names: what a hostile checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_that_needs_unpickling_is_refused_everywhere(text_runs, tmp_path):
    """A handed-over run folder or resume checkpoint holding a pickled object is refused with a
    one-line error by resume, ``recmig evaluate`` and the recommender, and never unpickled."""
    from recmig.serving import Recommender
    from recmig.train import reevaluate

    marker = tmp_path / "code-ran"
    run = tmp_path / "handed"
    shutil.copytree(text_runs[0], run)
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["extra"] = _Planted(marker)
    torch.save(checkpoint, best)

    with pytest.raises(ValueError, match=r"^checkpoint=.*pickled objects"):
        reevaluate(run)
    with pytest.raises(ValueError, match=r"^checkpoint=.*pickled objects"):
        Recommender.from_run(run)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(tmp_path / "resumed")
    cfg.resume = str(best)
    with pytest.raises(ValueError, match=r"^resume=.*pickled objects"):
        train(cfg)
    assert not marker.exists()
    torch.load(best, weights_only=False)  # (the file does run code when unpickled)
    assert marker.exists()


WANDB_SCRIPT = """
import sys
from omegaconf import open_dict
from recmig.config import compose_config
from recmig.train import train
cfg = compose_config(sys.argv[2:])
with open_dict(cfg):
    cfg.paths.output_dir = sys.argv[1]
train(cfg)
"""


@pytest.mark.parametrize("entry", ["cli", "python"])
def test_wandb_runs_offline_without_being_told(entry, tmp_path, data):
    """``logger=wandb`` with ``WANDB_MODE`` unset, no API key and every proxy pointing at a
    closed port: the run finishes well within its time limit and leaves its W&B run in the run
    folder, through the command and through ``recmig.train.train`` alike."""
    out = tmp_path / "run"
    overrides = [*_data_overrides(tmp_path, data), "encoder=id", "logger=wandb"]
    overrides += ["trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    closed = "http://127.0.0.1:9"  # (the discard port: nothing listens)
    env = _env(HTTP_PROXY=closed, HTTPS_PROXY=closed, NO_PROXY="", WANDB_MODE=None)
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc key or W&B settings of the tester
    assert "WANDB_MODE" not in env
    command = (
        _command(out, *overrides)
        if entry == "cli"
        else [sys.executable, "-c", WANDB_SCRIPT, str(out), *overrides]
    )
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/cold/ndcg@10" in json.loads((out / "metrics.json").read_text())
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run file"
    assert not list((out / "wandb").glob("run-*")), "W&B made an online run"
