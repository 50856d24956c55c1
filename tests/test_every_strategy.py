"""Every registered strategy, found by itself, trains on real ML-100K with the real encoder.

A new strategy (built-in or an installed plugin) is covered without editing this file.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from recmig.closed_form import ClosedFormStrategy
from recmig.registry import discover, load_strategy
from recmig.serving import Recommender, UnknownIdError


def train_run(name: str, out, cwd, *overrides: str) -> dict:
    """`recmig train strategy=<name>` in a subprocess (a rating-only strategy runs the rating
    view, every rating kept, as its experiment); the run's metrics.json."""
    cls = load_strategy(name)
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
            *overrides,
            f"hydra.run.dir={out}",
            *objective,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(discover()))
def test_strategy_trains_on_real_data(name, tmp_path):
    out = tmp_path / "run"
    cls = load_strategy(name)
    metrics = train_run(
        name,
        out,
        tmp_path,
        "data=ml100k_genres",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=4",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    )
    assert {"test/cold/ndcg@10", "test/warm/ndcg@10", "val/ndcg@10"} <= set(metrics)
    check_recommender(out)
    if issubclass(cls, ClosedFormStrategy):  # fitted once, no epochs, its fit the checkpoint
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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(discover()))
def test_strategy_trains_on_several_source_domains(name, tmp_path):
    """ML-100K with three source domains (comedy, drama, children's families): every strategy
    trains and scores, the scenario counts each domain, and per-user domain weights, where a
    strategy records them, sum to one with none on the target for cold users."""
    out = tmp_path / "run"
    metrics = train_run(
        name,
        out,
        tmp_path,
        "data=ml100k_multi_source",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "logger=none",
    )
    assert metrics["test/cold/ndcg@10"] > 0
    domains = ("comedy", "drama", "children")
    assert all(metrics[f"scenario/source/{d}/users"] > 0 for d in domains)
    users = pd.read_parquet(out / "test_users.parquet")
    weights = [c for c in users.columns if c.startswith("weight/")]
    if weights:
        assert sorted(weights) == sorted(f"weight/{d}" for d in (*domains, "target"))
        assert (users[weights].sum(axis=1) - 1).abs().max() < 1e-5
        assert (users.loc[users["group"] == "cold", "weight/target"] == 0).all()
        assert "test/cold/weight/comedy/mean" in metrics
    check_recommender(out)  # serving splits histories by domain as the evaluator does


def check_recommender(run_dir):
    """The finished run as a recommender: the evaluator's lists, new users, bad ids, updates."""
    rec = Recommender.from_run(run_dir)
    users = pd.read_parquet(run_dir / "test_users.parquet")
    sample = pd.concat([g.head(20) for _, g in users.groupby("group")])
    lists = rec.recommend_users(sample["user_id"].tolist(), k=10)
    for row in sample.itertuples(index=False):
        got = lists.loc[lists["user_id"] == row.user_id, "item_id"].tolist()
        assert got == list(row.top)[:10], (row.group, row.user_id)
    # A new user with a cold test user's source history (ids and ratings) gets that list.
    cold = sample[sample["group"] == "cold"].iloc[0]
    history = rec.known_history(cold.user_id)
    entries = [
        (rec.item_ids[t - 1], r) for t, r in zip(history.tokens, history.ratings, strict=True)
    ]
    new = rec.recommend(source_history=entries, k=10)
    assert new["item_id"].tolist() == list(cold.top)[:10]
    with pytest.raises(UnknownIdError, match="no-such-item"):
        rec.recommend(source_history=[*[e[0] for e in entries], "no-such-item"])
    # One more interaction with the top item: it leaves the list (the user is warm now).
    rec.update(cold.user_id, new["item_id"].iloc[0])
    after = rec.recommend(user=cold.user_id, k=10)
    assert new["item_id"].iloc[0] not in after["item_id"].tolist()
    assert not rec.batch([rec.history_of(cold.user_id)])["is_cold"].item()
