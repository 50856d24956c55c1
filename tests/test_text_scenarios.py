"""New items, a zero-shot target platform, and the text-prior closed form (text_prior)."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from recmig_strategies.ease import EASE
from recmig_strategies.ridge_map import RidgeMap
from recmig_strategies.text_prior import TextPrior, text_to_columns

from recmig.batches import MATRIX_ROWS
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import COLD_TEST, COLD_VAL, SOURCE, TARGET, ScenarioConfig, build_scenario
from recmig.encoders.item import TextItemEncoder
from recmig.evaluation.evaluator import Evaluator
from recmig.evaluation.ranking import metrics_of_top, top_items
from recmig.linear import ease_weights
from tests.test_closed_form import context_for, dense_items, scores_of


def new_item_cfg(scenario_cfg: ScenarioConfig, **options) -> ScenarioConfig:
    return replace(scenario_cfg, new_item_fraction=0.25, **options)


def test_new_items_never_reach_training_but_stay_evaluated(data, scenario_cfg):
    plain = build_scenario(data, scenario_cfg)
    s = build_scenario(data, new_item_cfg(scenario_cfg))
    new = set(s.new_items.tolist())
    target = set(s.catalog(TARGET).tolist())
    assert new and new <= target and len(new) == round(0.25 * len(target))
    assert not s.train["item"].isin(new).any()
    # The user split is the one without new items; held-out new interactions stay held out.
    assert s.cold.equals(plain.cold) and s.warm.equals(plain.warm)
    assert s.cold["item"].isin(new).any()
    # Every training interaction removed is one with a new item, and nothing else changed.
    removed = plain.train[plain.train["item"].isin(new)]
    assert len(plain.train) - len(s.train) == len(removed) > 0
    # The fitted matrices never see them either.
    tensors = ScenarioTensors(s, 8)
    matrix = tensors.training_matrix().interactions
    assert matrix[:, sorted(new)].nnz == 0
    assert s.stats["new_items/items"] == len(new)


def test_newest_items_are_those_first_seen_last(data, scenario_cfg):
    s = build_scenario(data, new_item_cfg(scenario_cfg, new_item_order="newest"))
    plain = build_scenario(data, scenario_cfg)
    columns = ["user", "item", "timestamp"]
    every = pd.concat(
        [plain.train.loc[plain.train["domain"] == TARGET, columns], plain.cold[columns]]
        + [plain.warm[columns]]
    )
    first = every.groupby("item")["timestamp"].min()
    assert first.loc[s.new_items].min() >= first.drop(s.new_items).max()


def test_zero_shot_training_holds_no_target_interaction(data, scenario_cfg):
    s = build_scenario(data, replace(scenario_cfg, zero_shot=True, cold_fraction=None))
    assert (s.train["domain"] == SOURCE).all()
    assert s.warm.empty
    overlap = s.stats["overlap/users"]
    assert s.stats["cold/val_users"] + s.stats["cold/test_users"] == overlap
    assert set(s.cold["group"]) == {COLD_VAL, COLD_TEST}
    assert len(s.catalog(TARGET)) > 0  # the target's items (and texts) are known


@pytest.mark.parametrize(
    "options, message",
    [
        ({"new_item_fraction": 1.0}, r"new_item_fraction must be in \[0, 1\)"),
        ({"new_item_fraction": -0.1}, r"new_item_fraction must be in \[0, 1\)"),
        ({"new_item_order": "oldest"}, "new_item_order must be 'random' or 'newest'"),
        ({"zero_shot": True}, "zero_shot makes every user with source history cold"),
        ({"zero_shot": True, "cold_fraction": None, "new_item_fraction": 0.2}, "zero_shot"),
        ({"cold_fraction": None}, r"cold_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_scenario_options_name_the_option(scenario_cfg, options, message):
    with pytest.raises(ValueError, match=message):
        replace(scenario_cfg, **options)


def test_ease_with_a_prior_matches_its_formula_on_a_toy_matrix():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 7)) < 0.4).astype(np.float64)
    x[:, 6] = 0.0  # an item nobody has: its column is the prior's
    prior = rng.normal(size=(7, 3)) * 0.1
    lam, columns = 2.0, np.array([1, 4, 6])
    got = ease_weights((x.T @ x).astype(np.float32), lam, columns, prior.astype(np.float32))
    # argmin ||X - XB||^2 + lam ||B - B0||^2 s.t. diag(B) = 0, column by column (KKT system).
    g = x.T @ x + lam * np.eye(7)
    for c, j in enumerate(columns):
        if j == 6:
            expected = prior[:, c].copy()
            expected[j] = 0.0
        else:
            kkt = np.zeros((8, 8))
            kkt[:7, :7], kkt[:7, 7], kkt[7, :7] = g, np.eye(7)[j], np.eye(7)[j]
            rhs = np.append(x.T @ x[:, j] + lam * prior[:, c], 0.0)
            expected = np.linalg.solve(kkt, rhs)[:7]
        np.testing.assert_allclose(got[:, c], expected, atol=1e-5)
    # Without a prior it is EASE.
    plain = ease_weights((x.T @ x).astype(np.float32), lam, columns)
    p = np.linalg.inv(g)
    np.testing.assert_allclose(plain, (np.eye(7) - p / np.diag(p))[:, columns], atol=1e-5)


def test_text_to_columns_is_ridge_with_an_unpenalised_intercept():
    rng = np.random.default_rng(1)
    text, columns = rng.normal(size=(9, 4)), rng.normal(size=(5, 9))
    a = text_to_columns(columns, text, 0.5)
    t = np.hstack([text, np.ones((9, 1))])
    penalty = np.diag([0.5 * np.trace(text.T @ text) / 4] * 4 + [0.0])
    expected = columns @ t @ np.linalg.inv(t.T @ t + penalty)
    np.testing.assert_allclose(a, expected, atol=1e-8)


@pytest.fixture
def text_setup(data, scenario_cfg, tmp_path):
    scenario = build_scenario(data, new_item_cfg(scenario_cfg))
    tensors = ScenarioTensors(scenario, 8)
    context = context_for(scenario, tensors)
    context.make_item_encoder = partial(
        TextItemEncoder, tensors.vocab_size, 8, scenario.items, cache_dir=tmp_path
    )
    dm = CrossDomainDataModule(tensors, (), LoaderConfig(max_len=8), reads=MATRIX_ROWS)
    return scenario, tensors, context, dm


def test_text_prior_without_text_is_ridge_map_exactly(text_setup):
    _, tensors, context, dm = text_setup
    matrix = tensors.training_matrix()
    off, plain = (
        TextPrior(context, lam=5.0, map_lam=2.0, prior_weight=0.0),
        RidgeMap(context, lam=5.0, map_lam=2.0),
    )
    off.fit(matrix)
    plain.fit(matrix)
    np.testing.assert_array_equal(scores_of(off, dm)[0], scores_of(plain, dm)[0])


def test_text_prior_scores_new_items_through_text(text_setup):
    scenario, tensors, context, dm = text_setup
    matrix = tensors.training_matrix()
    strategy = TextPrior(context, lam=5.0, map_lam=2.0, prior_weight=1.0, text_lam=1.0)
    strategy.fit(matrix)
    new_cols = tensors.new_item_mask.numpy()
    # An interaction model gives a new item nothing: EASE's column is all zeros ...
    ease = EASE(context, lam=5.0)
    ease.fit(matrix)
    assert (ease.weights[:, torch.from_numpy(new_cols)] == 0).all()
    # ... while the prior gives every new item a column of its own (the text's), cold and warm.
    assert (strategy.warm.weights[:, torch.from_numpy(new_cols)].abs().sum(0) > 0).all()
    assert (strategy.cold_weights[:, torch.from_numpy(new_cols)].abs().sum(0) > 0).all()
    # A new item's warm column is exactly the text prior (no data term), diagonal removed.
    x = dense_items(tensors)
    known = np.flatnonzero(x.sum(0) > 0)
    eased = ease_weights((x.T @ x).astype(np.float32), 5.0, known)
    prior = strategy.text_columns(eased, known)
    column = np.flatnonzero(new_cols)[0]
    expected = prior[:, column].copy()
    expected[context.target_catalog[column] - 1] = 0.0
    np.testing.assert_allclose(
        strategy.warm.weights[1 : context.bos, column].numpy(), expected, atol=1e-6
    )


def test_evaluator_ranks_new_items_among_themselves(text_setup):
    _, tensors, context, dm = text_setup
    strategy = TextPrior(context, lam=5.0, map_lam=2.0)
    strategy.fit(tensors.training_matrix())
    evaluator = Evaluator(ks=(5,))
    batch = dm.eval_data["test"][0]
    scores = strategy.target_scores(batch)
    top = top_items(scores, batch["excluded"], 5)
    values = evaluator._new_item_metrics(scores, top, batch)
    new = batch["new_items"]
    relevant = batch["relevant"] & new
    rows = relevant.any(1)
    assert rows.any()
    by_hand = metrics_of_top(
        top_items(scores[rows], batch["excluded"][rows] | ~new, 5), relevant[rows], (5,)
    )
    torch.testing.assert_close(values["new_items/ndcg@5"][rows], by_hand["ndcg@5"])
    assert torch.isnan(values["new_items/ndcg@5"][~rows]).all()
    torch.testing.assert_close(values["new_items/share@5"], new[top].float().sum(1) / 5)


def test_a_target_stream_in_a_zero_shot_scenario_is_a_clear_error(data, scenario_cfg):
    s = build_scenario(data, replace(scenario_cfg, zero_shot=True, cold_fraction=None))
    tensors = ScenarioTensors(s, 8)
    with pytest.raises(ValueError, match="no target training interaction.*zero_shot"):
        tensors.windows("target")
    assert len(tensors.windows("source")["user"]) > 0  # source sequences train as before
