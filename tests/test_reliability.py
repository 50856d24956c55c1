"""Reliability of a run: a killed run resumes to the numbers it would have reached, the same
config and seed give the same numbers, checkpoints hold no pickled code, and W&B never waits
on a network. Every run is `recmig train` on the tiny synthetic two-domain data."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
    """The synthetic data as your own files (Books source, Films target)."""
    inter = data.interactions.merge(data.items[["item_id", "genre"]], on="item_id")
    inter["domain"] = inter.pop("genre").str.split(",").str[0]
    inter.to_parquet(tmp_path / "inter.parquet")
    data.items.to_csv(tmp_path / "items.csv", index=False)
    return [
        "data=custom_files",
        f"data.dataset.interactions={tmp_path / 'inter.parquet'}",
        f"data.dataset.items={tmp_path / 'items.csv'}",
        "data.scenario.source_domains=[Books]",
        "data.scenario.target_domains=[Films]",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]


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
