"""content_knn: text cosine neighbours of the history items, against hand computations."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recmig_strategies.content_knn import ContentKNN

from recmig import neighbours
from recmig.batches import MATRIX_ROWS, UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors, TrainingMatrix
from recmig.data.scenario import SOURCE, TARGET, build_scenario
from recmig.encoders.item import IdItemEncoder
from recmig.registry import load_strategy
from recmig.strategy import StrategyContext
from recmig.users.interest import MeanInterest
from tests.test_closed_form import context_for, dense_items, scores_of

# Six items in the plane, in +/- pairs so that their mean is 0 (item_text centres the
# features, which then changes nothing): tokens 1, 2 are source items, 3..6 target items.
A, B, C = (1.0, 0.0), (0.6, 0.8), (0.8, 0.6)
FEATURES = [A, tuple(-x for x in B), B, C, tuple(-x for x in A), tuple(-x for x in C)]
VOCAB = 8  # padding 0, items 1..6, BOS 7
TARGET_CATALOG = [3, 4, 5, 6]  # b, c, -a, -c
# Cosine of each item (row) to each target item (column); None: the item itself (excluded).
COSINE = [
    [0.6, 0.8, -1.0, -0.8],  # a
    [-1.0, -0.96, 0.6, 0.96],  # -b
    [None, 0.96, -0.6, -0.96],  # b
    [0.96, None, -0.8, -1.0],  # c
    [-0.6, -0.8, None, 0.8],  # -a
    [-0.96, -1.0, 0.8, None],  # -c
]


def text_encoder(features) -> SimpleNamespace:
    """What item_text reads from an item encoder: its frozen (N, d) text features."""
    table = torch.tensor(features, dtype=torch.float32)
    return SimpleNamespace(text_features=lambda: table)


def plane_context() -> StrategyContext:
    return StrategyContext(
        vocab_size=VOCAB,
        dim=2,
        source_catalog=torch.tensor([1, 2]),
        target_catalog=torch.tensor(TARGET_CATALOG),
        make_item_encoder=partial(text_encoder, FEATURES),
        make_user_model=partial(MeanInterest, 2),
    )


def source_only_matrix(users: int = 3) -> TrainingMatrix:
    """Training interactions with the two source items only: no target item has any."""
    interactions = sp.lil_matrix((users, VOCAB), dtype=np.float32)
    interactions[:, 1:3] = 1.0
    domain = np.array([SOURCE, SOURCE, SOURCE, TARGET, TARGET, TARGET, TARGET])
    return TrainingMatrix(interactions.tocsr(), sp.csr_matrix((users, VOCAB)), domain)


def histories(*items: list[int]) -> dict[str, torch.Tensor]:
    """An evaluation batch whose ``inputs`` rows hold these item tokens."""
    rows = [r for r, tokens in enumerate(items) for _ in tokens]
    cols = [t for tokens in items for t in tokens]
    inputs = torch.sparse_coo_tensor(
        torch.tensor([rows, cols]),
        torch.ones(len(cols)),
        (len(items), VOCAB),
        check_invariants=True,
    )
    return UserBatch(inputs=inputs)


def hand_weights(k: int, alpha: float) -> np.ndarray:
    """(6, 4) weight of each item's k most similar target items: max(cos, 0) ** alpha."""
    out = np.zeros((6, 4))
    for i, row in enumerate(COSINE):
        candidates = sorted((c, j) for j, c in enumerate(row) if c is not None)[::-1][:k]
        for c, j in candidates:
            out[i, j] = max(c, 0.0) ** alpha
    return out


def fitted(context: StrategyContext, **options) -> ContentKNN:
    strategy = ContentKNN(context, **options)
    strategy.fit(source_only_matrix())
    return strategy


@pytest.mark.parametrize(("k", "alpha"), [(100, 1.0), (4, 1.0), (2, 1.0), (1, 1.0), (2, 2.5)])
def test_scores_are_sums_of_hand_computed_text_cosines(k, alpha):
    strategy = fitted(plane_context(), k=k, alpha=alpha)
    users = [[1], [1, 2], [2, 5], [3], []]
    scores = strategy.target_scores(histories(*users)).numpy()
    weights = hand_weights(k, alpha)
    expected = np.array([weights[[t - 1 for t in tokens]].sum(0) for tokens in users])
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-7)


def test_the_plane_example_written_out():
    # Every target item is new (no interaction at all), yet the text scores it.
    scores = fitted(plane_context(), k=100).target_scores(histories([1], [1, 2], [2, 5]))
    expected = [[0.6, 0.8, 0.0, 0.0], [0.6, 0.8, 0.6, 0.96], [0.0, 0.0, 0.6, 1.76]]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6, atol=1e-7)
    # k = 1: each history item votes for its single nearest target item.
    scores = fitted(plane_context(), k=1).target_scores(histories([1], [1, 2], [2, 5]))
    expected = [[0.0, 0.8, 0.0, 0.0], [0.0, 0.8, 0.0, 0.96], [0.0, 0.0, 0.0, 1.76]]
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_k_keeps_at_most_k_neighbours_and_never_the_item_itself():
    for k in (1, 2, 3, 10):
        strategy = fitted(plane_context(), k=k)
        kept = min(k, len(TARGET_CATALOG))
        assert strategy.neighbours.shape == strategy.similarity.shape == (6, kept)
        positions = torch.tensor(TARGET_CATALOG)[strategy.neighbours]
        own = torch.arange(1, 7).unsqueeze(1)
        assert ((positions != own) | (strategy.similarity == 0)).all()
        assert (strategy.similarity >= 0).all()


def test_alpha_raises_the_kept_similarities_to_its_power():
    plain, sharp = fitted(plane_context(), k=3), fitted(plane_context(), k=3, alpha=3.0)
    order_plain = torch.sort(plain.similarity, dim=1).values
    order_sharp = torch.sort(sharp.similarity, dim=1).values
    torch.testing.assert_close(order_sharp, order_plain**3)


def test_fit_reads_no_interaction_data():
    # No target item has an interaction (an interaction model has nothing to fit), and the
    # matrix is not even read: the same neighbours without it.
    context = plane_context()
    a, b = ContentKNN(context, k=2), ContentKNN(context, k=2)
    a.fit(source_only_matrix())
    b.fit(None)
    torch.testing.assert_close(a.similarity, b.similarity)
    torch.testing.assert_close(a.neighbours, b.neighbours)


def test_blocks_give_the_same_neighbours(monkeypatch):
    whole = fitted(plane_context(), k=2)
    monkeypatch.setattr(neighbours, "BLOCK_BYTES", 4 * len(TARGET_CATALOG))  # one row a block
    rows = fitted(plane_context(), k=2)
    torch.testing.assert_close(rows.neighbours, whole.neighbours)
    torch.testing.assert_close(rows.similarity, whole.similarity)


def test_matches_cosine_by_hand_on_a_scenario_with_new_items(data, scenario_cfg):
    scenario = build_scenario(data, replace(scenario_cfg, new_item_fraction=0.5))
    tensors = ScenarioTensors(scenario, 8)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(tensors.vocab_size - 2, 6))
    context = replace(
        context_for(scenario, tensors), make_item_encoder=partial(text_encoder, features)
    )
    dm = CrossDomainDataModule(tensors, (), LoaderConfig(max_len=8), reads=MATRIX_ROWS)
    k, alpha = 4, 1.5
    strategy = ContentKNN(context, k=k, alpha=alpha)
    strategy.fit(tensors.training_matrix())

    text = features - features.mean(0)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    cosine = text @ text.T
    np.fill_diagonal(cosine, -np.inf)
    target = context.target_catalog.numpy() - 1
    cosine = cosine[:, target]
    weights = np.zeros_like(cosine)
    for i, row in enumerate(cosine):
        top = np.argsort(-row)[:k]
        weights[i, top] = np.maximum(row[top], 0.0) ** alpha
    scores, users = scores_of(strategy, dm)
    expected = dense_items(tensors, "test")[users] @ weights
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)

    # Target items without a training interaction are scored like the others.
    trained = dense_items(tensors)[:, target].sum(0) > 0
    assert (~trained).any()
    assert (scores[:, ~trained] > 0).any()


def test_a_zero_shot_scenario_scores_its_cold_users(data, scenario_cfg):
    cfg = replace(scenario_cfg, zero_shot=True, cold_fraction=None)
    scenario = build_scenario(data, cfg)
    tensors = ScenarioTensors(scenario, 8)
    features = np.random.default_rng(1).normal(size=(tensors.vocab_size - 2, 6))
    context = replace(
        context_for(scenario, tensors), make_item_encoder=partial(text_encoder, features)
    )
    matrix = tensors.training_matrix()
    target = context.target_catalog.numpy()
    assert matrix.interactions[:, target].nnz == 0
    strategy = ContentKNN(context, k=5)
    strategy.fit(matrix)
    dm = CrossDomainDataModule(tensors, (), LoaderConfig(max_len=8), reads=MATRIX_ROWS)
    scores, users = scores_of(strategy, dm)
    assert len(users) > 0 and (scores.sum(1) > 0).all()


def test_fitted_buffers_round_trip_through_a_state_dict():
    a = fitted(plane_context(), k=2, alpha=2.0)
    b = ContentKNN(plane_context(), k=2, alpha=2.0)
    b.load_state_dict(a.state_dict())
    batch = histories([1], [2, 6])
    torch.testing.assert_close(b.target_scores(batch), a.target_scores(batch))


def test_registered_as_content_knn():
    assert load_strategy("content_knn") is ContentKNN
    assert issubclass(ContentKNN, ClosedFormStrategy) and not ContentKNN.needs_source
    assert ContentKNN.description


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, r"strategy.k must be an integer >= 1 \(neighbours kept\), got 0"),
        ({"k": -3}, "strategy.k must be an integer >= 1"),
        ({"alpha": 0.0}, r"strategy.alpha must be > 0 \(similarity exponent\), got 0.0"),
        ({"alpha": -1.0}, "strategy.alpha must be > 0"),
        ({"alpha": float("nan")}, "strategy.alpha must be > 0"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        ContentKNN(plane_context(), **options)


def test_an_encoder_without_text_is_a_clear_error():
    context = replace(plane_context(), make_item_encoder=partial(IdItemEncoder, VOCAB, 2))
    with pytest.raises(ValueError, match=r"strategy=content_knn reads item text.*use encoder=text"):
        ContentKNN(context).fit(source_only_matrix())
