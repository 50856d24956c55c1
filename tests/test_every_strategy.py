"""Every registered strategy, found by itself, trains on real ML-100K with the real encoder.

A new strategy (built-in or an installed plugin) is covered without editing this file.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from recmig.registry import discover, load_strategy


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(discover()))
def test_strategy_trains_on_real_data(name, tmp_path):
    out = tmp_path / "run"
    cls = load_strategy(name)
    # A rating-only strategy runs the rating view (every rating kept, as its experiment).
    objective = (
        [] if "ranking" in cls.objectives else ["objective=rating", "data.scenario.min_rating=null"]
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recmig.cli",
            "train",
            f"strategy={name}",
            "data=ml100k_genres",
            "trainer.max_epochs=4",
            "trainer.limit_train_batches=4",
            "trainer.log_every_n_steps=1",
            "logger=csv",
            f"hydra.run.dir={out}",
            *objective,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test/cold/ndcg@10", "test/warm/ndcg@10", "val/ndcg@10"} <= set(metrics)
    if cls.fitted_once:  # closed form: fitted once, no epochs, its fit saved as the checkpoint
        assert metrics["epochs"] == 0 and (out / "checkpoints" / "best-fitted.ckpt").is_file()
        assert metrics["test/cold/ndcg@10"] > 0
        return
    rows = list(csv.DictReader((out / "csv" / "version_0" / "metrics.csv").open()))
    losses = [(int(r["epoch"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]
    assert len(losses) >= 8 and all(loss == loss and abs(loss) < 1e6 for _, loss in losses)
    # Every strategy's first phase lasts at least two epochs: the loss falls within it.
    first = [loss for epoch, loss in losses if epoch == 0]
    second = [loss for epoch, loss in losses if epoch == 1]
    assert sum(second) / len(second) < sum(first) / len(first)
