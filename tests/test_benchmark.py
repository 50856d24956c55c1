"""`recmig benchmark` end to end on a tiny synthetic scenario: the default figures (with the
evaluation of every test user) and the catalogue curve (full vs sampled softmax) come out as
numbers of the right kind. The figures themselves are speed claims: they live in
experiments/benchmark/, never in assertions here."""

from __future__ import annotations

import math

import pytest

import recmig.sweep_cost
from recmig.benchmark import catalogue_curve, hold_out, measure, scaling, synthetic_matrix
from recmig.config import compose_config
from recmig.sweep_cost import job_seconds, sweep_cost, sweep_jobs

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


def test_scaling_compares_the_solvers_on_held_out_items():
    results = scaling((600,), users=400, per_user=10, exact_max=600, neighbours=50)
    for label in ("itemknn", "ease exact", "ease neighbourhood (k 50)"):
        assert results[f"{label} fit, 600 items (s)"] > 0
        assert results[f"{label} fit, 600 items, peak allocated (MiB)"] > 0
        assert 0 <= results[f"{label}, 600 items, held-out NDCG@10"] <= 1
    # Above --exact-max only the solvers that scale run.
    above = scaling((600,), users=400, per_user=10, exact_max=500, neighbours=50)
    assert not any(key.startswith("ease exact") for key in above)


def test_hold_out_removes_exactly_the_ranked_item():
    matrix = synthetic_matrix(300, users=200, per_user=8, clusters=3)
    training, batch = hold_out(matrix, users=50)
    removed = matrix.interactions - training.interactions
    assert removed.nnz == 50 and (removed.data == 1).all()
    assert batch["relevant"].sum() == 50 and not (batch["relevant"] & batch["excluded"]).any()


def test_sweep_jobs_are_every_combination_and_the_cost_adds_up():
    jobs = sweep_jobs({"strategy": "ease,itemknn", "seed": "0,1,2"})
    assert len(jobs) == 6 and {"strategy": "itemknn", "seed": "2"} in jobs
    with pytest.raises(ValueError, match=r"hydra.sweeper.params.seed: 'range\(3\)'"):
        sweep_jobs({"seed": "range(3)"})
    parts = {"build": 2.0, "epoch": 3.0, "epochs": 10, "validations per epoch": 0.5}
    assert job_seconds({**parts, "validate": 1.0, "test": 4.0}) == 2 + 10 * 3.5 + 4
    fitted = {"build": 2.0, "fit": 1.0, "validate": 1.0, "test": 1.0, "epochs": 0}
    assert job_seconds(fitted) == 5.0
    assert job_seconds(fitted, start=3.0) == 8.0  # every job starts a process


def test_sweep_cost_times_each_strategy_once(monkeypatch):
    def with_sweep(overrides, with_hydra):  # a sweep of TINY (no experiment has one that small)
        cfg = compose_config(overrides, with_hydra=with_hydra)
        cfg.hydra.sweeper.params = {"strategy": "popularity,target_only", "seed": "0,1"}
        return cfg

    monkeypatch.setattr(recmig.sweep_cost, "compose_config", with_sweep)
    results = sweep_cost([*TINY, "trainer.max_epochs=3"])
    assert results["jobs"] == 4
    assert results["popularity: jobs"] == results["target_only: jobs"] == 2
    assert results["target_only: epochs"] == 3 and results["target_only: epoch (s)"] > 0
    assert results["process start (s)"] > 0
    total = 2 * (
        results["popularity: estimated seconds per job"]
        + results["target_only: estimated seconds per job"]
    )
    assert results["estimated serial wall time (h)"] == pytest.approx(total / 3600)
    with pytest.raises(ValueError, match="no hydra.sweeper.params"):
        monkeypatch.setattr(recmig.sweep_cost, "compose_config", compose_config)
        sweep_cost(TINY)
