"""`recmig benchmark` end to end on a tiny synthetic scenario: the default figures (with the
evaluation of every test user) and the catalogue curve (full vs sampled softmax) come out as
numbers of the right kind. The figures themselves are speed claims: they live in
experiments/benchmark/, never in assertions here."""

from __future__ import annotations

import math

import pytest

from recmig.benchmark import catalogue_curve, measure

TINY = [
    "data=synthetic_large",
    "encoder=id",
    "data.dataset.users=300",
    "data.dataset.source_items=60",
    "data.dataset.target_items=200",
    "data.dataset.per_user=8",
    "data.dataset.clusters=5",
    "logger=none",
    "loader.batch_size=64",
]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECMIG_CACHE_DIR", str(tmp_path / "cache"))


def test_the_default_figures_include_every_test_users_evaluation():
    results = measure(TINY, epochs=2)
    assert results["training epoch, median (s)"] > 0
    assert results["evaluation of every test user, full ranking (s)"] > 0
    # Validation and test: the same warm users and cold groups of one size (60 cold users).
    assert results["test users"] == results["evaluation users"] > 60
    assert 190 <= results["target items"] <= 200
    stages = [k for k in results if k.startswith("training step: ") and k.endswith("(share)")]
    assert sum(results[k] for k in stages) == pytest.approx(1.0)


def test_the_catalogue_curve_times_and_scores_both_losses():
    results = catalogue_curve({"tiny": TINY}, ["strategy=target_only"], epochs=1, negatives=16)
    for loss in ("full", "sampled 16"):
        assert results[f"tiny, {loss}: training epoch, median (s)"] > 0
        ndcg = results[f"tiny, {loss}: test/ndcg@10 after 1 epochs"]
        assert 0 < ndcg <= 1 and not math.isnan(ndcg)
    assert results["tiny: training windows per epoch"] > 0
    with pytest.raises(ValueError, match="choose a trained strategy"):
        catalogue_curve({"tiny": TINY}, ["strategy=popularity"], epochs=1, negatives=16)
