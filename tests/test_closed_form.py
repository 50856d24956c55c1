"""Closed-form baselines (popularity, ItemKNN, EASE, user_bias) against hand computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import context_for
from omegaconf import OmegaConf
from recmig_strategies.ease import EASE
from recmig_strategies.itemknn import ItemKNN
from recmig_strategies.popularity import Popularity
from recmig_strategies.ridge_transfer import RidgeTransfer
from recmig_strategies.text_ease import TextEASE
from recmig_strategies.user_bias import UserBias

from recmig.batches import MATRIX_ROWS
from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import SOURCE, TARGET, ScenarioConfig, build_scenario
from recmig.data.schema import InteractionData
from recmig.encoders.item import TextItemEncoder
from recmig.strategy import Strategy, TransferStrategy
from recmig.train import build_strategy


@pytest.fixture
def setup(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, 8)
    context = context_for(scenario, tensors, objective="rating")
    dm = CrossDomainDataModule(
        tensors, (), LoaderConfig(max_len=8), ratings=True, reads=MATRIX_ROWS
    )
    return scenario, tensors, context, dm


def dense_items(tensors: ScenarioTensors, split: str = "val") -> np.ndarray:
    """(users, N) binary input matrix over the item tokens 1..N, as numpy float64."""
    return tensors.input_matrix(split)[:, 1 : tensors.bos].toarray().astype(np.float64)


def scores_of(strategy, dm, split: str = "test"):
    """(users, N_t) scores of every evaluated user of a split, and those users."""
    batches = dm.eval_data[split]
    users = torch.cat([b["user"] for b in batches]).numpy()
    return torch.cat([strategy.target_scores(b) for b in batches]).numpy(), users


def test_input_matrix_is_training_plus_validation_items_at_test(setup):
    scenario, tensors, _, _ = setup
    val, test = tensors.input_matrix("val"), tensors.input_matrix("test")
    train = scenario.train
    assert val.nnz == len(train.drop_duplicates(["user", "item"]))
    warm_val = scenario.warm[scenario.warm["split"] == "val"]
    assert test.nnz == val.nnz + len(warm_val)
    assert (test[warm_val["user"].to_numpy(), warm_val["item"].to_numpy()] == 1).all()
    assert val[:, 0].nnz == 0 and val[:, tensors.bos].nnz == 0  # padding and BOS stay empty


def test_popularity_scores_are_training_counts_of_target_items(setup):
    scenario, tensors, context, dm = setup
    strategy = Popularity(context)
    strategy.fit(tensors.training_matrix())
    target = scenario.train[scenario.train["domain"] == TARGET]
    expected = target.groupby("item")["user"].nunique().reindex(scenario.catalog(TARGET))
    assert strategy.counts.tolist() == expected.fillna(0).tolist()
    scores, _ = scores_of(strategy, dm)
    assert (scores == strategy.counts.numpy()).all()


def test_ease_matches_its_closed_form(setup):
    _, tensors, context, dm = setup
    lam = 7.0
    strategy = EASE(context, lam=lam)
    strategy.fit(tensors.training_matrix())
    x = dense_items(tensors)
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)  # B = I - P diag(1 / diag(P))
    assert np.allclose(np.diag(b), 0.0)
    target = context.target_catalog.numpy() - 1
    scores, users = scores_of(strategy, dm)
    expected = dense_items(tensors, "test")[users] @ b[:, target]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)


def test_itemknn_matches_cosine_by_hand(setup):
    _, tensors, context, dm = setup
    k, shrink = 3, 0.5
    strategy = ItemKNN(context, k=k, shrink=shrink)
    strategy.fit(tensors.training_matrix())
    x = dense_items(tensors)
    counts = x.sum(0)
    sim = (x.T @ x) / (np.sqrt(np.outer(counts, counts)) + shrink)
    np.fill_diagonal(sim, 0.0)
    target = context.target_catalog.numpy() - 1
    sim = sim[:, target]  # (N, N_t): every item's similarity to each target item
    weights = np.zeros_like(sim)
    for i, row in enumerate(sim):  # keep each item's k most similar target items
        top = np.argsort(-row, kind="stable")[:k]
        weights[i, top] = row[top]
    scores, users = scores_of(strategy, dm)
    # Ties among the k-th neighbours may be broken either way: compare the kept weights' sums.
    np.testing.assert_allclose(
        np.sort(strategy.similarity.numpy(), axis=1), np.sort(weights, axis=1)[:, -k:], rtol=1e-5
    )
    expected = dense_items(tensors, "test")[users] @ weights
    untied = [len(set(np.round(r, 6))) == len(r) for r in sim]
    if all(untied):
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert scores.shape == expected.shape


def test_user_bias_is_item_baseline_plus_shrunk_source_residual(setup):
    scenario, tensors, context, dm = setup
    strategy = UserBias(context, shrinkage=2.0)
    strategy.fit(tensors.training_matrix())
    offsets = context.objective.offsets.numpy()
    source = scenario.train[scenario.train["domain"] == SOURCE].dropna(subset=["rating"])
    residual = (source["rating"] - offsets[source["item"]]).groupby(source["user"])
    bias = (residual.sum() / (residual.count() + 2.0)).reindex(range(scenario.num_users))
    scores, users = scores_of(strategy, dm)
    expected = offsets[scenario.catalog(TARGET)][None, :] + bias.fillna(0.0).to_numpy()[users, None]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_fitted_buffers_round_trip_through_a_state_dict(setup):
    _, tensors, context, dm = setup
    ridge = partial(RidgeTransfer, lam=3.0, text_weight=0.0)
    sparse_ease = partial(EASE, lam=3.0, solver="neighbourhood", neighbours=4)
    sparse_map = partial(ridge, densify=0.0, solver="neighbourhood", neighbours=4)
    for make in (
        Popularity,
        partial(ItemKNN, k=2),
        partial(EASE, lam=3.0),
        UserBias,
        ridge,
        sparse_ease,
        sparse_map,
    ):
        fitted = make(context)
        fitted.fit(tensors.training_matrix())
        loaded = make(context)
        loaded.load_state_dict(fitted.state_dict())
        loaded.refresh()
        np.testing.assert_array_equal(scores_of(loaded, dm)[0], scores_of(fitted, dm)[0])


def test_ease_refuses_a_catalogue_above_its_limit_before_allocating(setup):
    *_, context, _ = setup
    items = context.vocab_size - 2
    with pytest.raises(
        ValueError, match=rf"{items} items .*strategy.max_items=10;.* MiB\). Use strategy.solver"
    ):
        EASE(context, max_items=10, solver="exact")
    # 19,137 items (an Amazon-size catalogue): the message names the GiB it would take.
    big = replace(context, vocab_size=19_139)
    with pytest.raises(ValueError, match=r"19,137 items .*about 1.4 GiB.*neighbours=200"):
        EASE(big, max_items=19_000, solver="exact")
    # By default (solver auto) a catalogue above the limit gets the neighbourhood solver.
    assert EASE(big, max_items=19_000).solver == "neighbourhood"
    assert EASE(big).solver == "exact"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (partial(ItemKNN, k=0), "strategy.k must be an integer >= 1"),
        (partial(ItemKNN, shrink=-1.0), "strategy.shrink must be >= 0"),
        (partial(EASE, lam=0.0), "strategy.lam must be > 0"),
        (partial(UserBias, shrinkage=-1.0), "strategy.shrinkage must be >= 0"),
    ],
)
def test_bad_options_name_the_option(setup, make, message):
    *_, context, _ = setup
    with pytest.raises(ValueError, match=message):
        make(context)


def test_a_baseline_asked_for_an_objective_it_lacks_names_both(setup):
    _, tensors, _, _ = setup
    cfg = OmegaConf.create({"strategy": {"name": "ease"}, "objective": "rating", "dim": 8})
    with pytest.raises(
        ValueError, match=r"objective='rating': strategy 'ease' supports \['ranking'\]"
    ):
        build_strategy(cfg, tensors)
    cfg = OmegaConf.create({"strategy": {"name": "user_bias"}, "objective": "ranking", "dim": 8})
    with pytest.raises(ValueError, match=r"strategy 'user_bias' supports \['rating'\]"):
        build_strategy(cfg, tensors)


def test_no_target_training_interactions_is_a_clear_error():
    # Every target user is cold: the target catalogue has no training interaction at all.
    rows = [(f"u{u}", f"i{i}", 5.0, u * 10 + i) for u in range(6) for i in range(4)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(4)], "genre": ["Books", "Books", "Films", "Films"]}
    )
    scenario = build_scenario(
        InteractionData(interactions=inter, items=items, users=None, name="all-cold"),
        ScenarioConfig(source_domains=["Books"], target_domains=["Films"], cold_fraction=0.99),
    )
    tensors = ScenarioTensors(scenario, 4)
    context = context_for(scenario, tensors)
    for strategy in (Popularity(context), ItemKNN(context), EASE(context)):
        with pytest.raises(ValueError, match="no training interactions in the target domain"):
            strategy.fit(tensors.training_matrix())


def test_closed_form_and_trained_strategies_are_siblings(setup):
    # A closed-form strategy has no training side to refuse: it is not a TransferStrategy.
    *_, context, _ = setup
    ease = EASE(context)
    assert isinstance(ease, Strategy) and not isinstance(ease, TransferStrategy)
    assert not hasattr(ease, "training_loss") and ease.reads == {"inputs"}
    assert not issubclass(TransferStrategy, ClosedFormStrategy)


def test_sparse_input_rows_equal_the_dense_rows():
    from recmig.data.loaders import sparse_rows

    matrix = sp.random(7, 5, density=0.4, format="csr", dtype=np.float32, random_state=0)
    rows = np.array([4, 0, 6])
    np.testing.assert_array_equal(
        sparse_rows(matrix, rows).to_dense().numpy(), matrix[rows].toarray()
    )


@pytest.mark.slow
def test_ease_runs_end_to_end_on_real_ml100k_and_reevaluates(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "recmig.cli"]
    args = ["strategy=ease", "strategy.lam=300", "data=ml100k_genres", "logger=csv"]
    result = subprocess.run(
        [*command, "train", *args, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 0
    # On real data an item-item model over both domains is far above chance for cold users.
    assert metrics["test/cold/ndcg@10"] > 0.2 and metrics["test/warm/ndcg@10"] > 0.01
    again = subprocess.run(
        [*command, "evaluate", str(out)], capture_output=True, text=True, timeout=600, env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = json.loads((out / "metrics.json").read_text())
    assert rerun["test/cold/ndcg@10"] == pytest.approx(metrics["test/cold/ndcg@10"], abs=1e-6)


def test_text_ease_adds_scaled_text_similarity_to_the_gram_matrix(setup, tmp_path):
    scenario, tensors, _, dm = setup
    context = context_for(scenario, tensors)
    context.make_item_encoder = partial(
        TextItemEncoder, tensors.vocab_size, 8, scenario.items, cache_dir=tmp_path
    )
    matrix = tensors.training_matrix()
    plain, text = TextEASE(context, lam=5.0, text_weight=0.0), TextEASE(context, lam=5.0)
    text.text_weight = 0.5
    x = dense_items(tensors)
    features = context.make_item_encoder().features.numpy().astype(np.float64)
    features -= features.mean(0)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = x.T @ x + 0.5 * np.mean(np.diag(x.T @ x)) * unit @ unit.T
    np.testing.assert_allclose(text.gram(matrix), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plain.gram(matrix), x.T @ x, rtol=1e-6)
    # Without text weight it is EASE exactly.
    plain.fit(matrix)
    ease = EASE(context, lam=5.0)
    ease.fit(matrix)
    np.testing.assert_array_equal(scores_of(plain, dm)[0], scores_of(ease, dm)[0])


def test_text_ease_needs_a_text_encoder(setup):
    _, tensors, context, _ = setup  # an id encoder: no text features
    with pytest.raises(ValueError, match="use encoder=text"):
        TextEASE(context).fit(tensors.training_matrix())


def test_ridge_transfer_maps_cold_users_and_gives_warm_users_ease(setup):
    _, tensors, context, dm = setup
    matrix = tensors.training_matrix()
    strategy = RidgeTransfer(context, lam=5.0, map_lam=2.0, densify=0.0, text_weight=0.0)
    strategy.fit(matrix)
    ease = EASE(context, lam=5.0)
    ease.fit(matrix)
    x = dense_items(tensors)
    source = np.flatnonzero(tensors.scenario.item_domain[1:] == SOURCE)
    target = context.target_catalog.numpy() - 1
    xs, xt = x[:, source], x[:, target]
    both = (xs.sum(1) > 0) & (xt.sum(1) > 0)
    mapping = np.linalg.solve(
        xs[both].T @ xs[both] + 2.0 * np.eye(len(source)), xs[both].T @ xt[both]
    )
    scores, users = scores_of(strategy, dm)
    inputs = dense_items(tensors, "test")[users]
    cold = inputs[:, target].sum(1) == 0
    assert cold.any() and (~cold).any()
    np.testing.assert_allclose(
        scores[cold], inputs[cold][:, source] @ mapping, rtol=1e-3, atol=1e-5
    )
    np.testing.assert_array_equal(scores[~cold], scores_of(ease, dm)[0][~cold])


def test_ridge_transfer_densifies_with_source_ease(setup):
    _, tensors, context, dm = setup
    matrix = tensors.training_matrix()
    plain = RidgeTransfer(context, lam=5.0, map_lam=2.0, densify=0.0, text_weight=0.0)
    dense = RidgeTransfer(context, lam=5.0, map_lam=2.0, densify=1.0, text_weight=0.0)
    x = dense_items(tensors)
    source = np.flatnonzero(tensors.scenario.item_domain[1:] == SOURCE)
    d = dense.densifier(sp.csr_matrix(x[:, source]), source)
    xs = x[:, source]
    p = np.linalg.inv(xs.T @ xs + 1000.0 * np.eye(len(source)))
    b_ss = np.eye(len(source)) - p / np.diag(p)  # EASE on the source rows (source_lam 1000)
    np.testing.assert_allclose(d, np.eye(len(source)) + b_ss, atol=1e-5)
    plain.fit(matrix)
    dense.fit(matrix)
    assert not np.allclose(scores_of(plain, dm)[0], scores_of(dense, dm)[0])


def test_text_neighbours_keep_k_positive_rows_summing_to_one():
    from recmig.linear import text_neighbours

    rng = np.random.default_rng(0)
    text = rng.normal(size=(12, 5))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    sim = text_neighbours(text, 3)
    assert (np.diag(sim) == 0).all() and (sim >= 0).all()
    assert ((sim > 0).sum(1) <= 3).all()
    np.testing.assert_allclose(sim.sum(1)[(sim > 0).any(1)], 1.0)
    cosine = text @ text.T
    np.fill_diagonal(cosine, -np.inf)
    best = cosine.argmax(1)
    assert (sim[np.arange(12), best] > 0).all()  # the nearest item is always kept


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("map_lam", 0.0, "strategy.map_lam must be > 0"),
        ("densify", -1.0, "strategy.densify must be >= 0"),
        ("text_neighbours", 0, "strategy.text_neighbours must be >= 1"),
    ],
)
def test_ridge_transfer_bad_options(setup, option, value, message):
    *_, context, _ = setup
    with pytest.raises(ValueError, match=message):
        RidgeTransfer(context, **{option: value})


def test_benchmark_synthetic_matrix_is_a_training_matrix():
    from recmig.benchmark import synthetic_matrix

    matrix = synthetic_matrix(items=60, users=40, per_user=5)
    assert matrix.interactions.shape == (40, 62) and matrix.interactions.max() == 1.0
    assert matrix.interactions[:, 0].nnz == 0  # padding column stays empty
