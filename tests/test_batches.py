"""The batch contract: one builder of user batches for evaluation and serving, typed fields, and
a strategy gets exactly the inputs it declares."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import context_for, synthetic_data

from recmig.batches import MATRIX_ROWS, READABLE, SEQUENCES, TrainBatch, UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import CrossDomainDataModule, LoaderConfig, ScenarioTensors
from recmig.data.scenario import ScenarioConfig, build_scenario
from recmig.data.tensors import TrainingMatrix
from recmig.registry import discover, load_strategy
from recmig.serving import Recommender

MAX_LEN = 6


class ReadsEverything(ClosedFormStrategy):
    """A strategy that declares every input a batch can hold (scores nothing in particular)."""

    reads = READABLE
    objectives = ("ranking", "rating")

    def fit(self, matrix: TrainingMatrix) -> None:
        pass

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        return torch.zeros(len(batch), len(self.target_catalog))


@pytest.fixture
def setup():
    data = synthetic_data(n_users=50, n_items=30, per_user=12, seed=3)
    # Repeated interactions (a user's first source item again, last, rated 1: the last rating
    # counts); histories of 12 items are longer than MAX_LEN.
    inter = data.interactions
    books = inter.merge(data.items, on="item_id")["genre"].str.startswith("Books").to_numpy()
    again = inter[books].groupby("user_id").head(1).assign(timestamp=10_000, rating=1.0)
    # A target item seen again as a warm user's validation item (the second-to-last target
    # interaction under leave-one-out), rated 0.5 this time.
    films = inter[~books].sort_values("timestamp")
    first = films.groupby("user_id").head(1)
    before_last = films.groupby("user_id")["timestamp"].max() - 0.5
    seen_again = first.assign(timestamp=first["user_id"].map(before_last).to_numpy(), rating=0.5)
    parts = [inter, again, seen_again]
    data = dataclasses.replace(data, interactions=pd.concat(parts, ignore_index=True))
    config = ScenarioConfig(
        source_domains=["Books"], target_domains=["Films"], cold_fraction=0.3, seed=0
    )
    scenario = build_scenario(data, config)
    return scenario, ScenarioTensors(scenario, MAX_LEN)


def dense(value):
    return value.to_dense() if value is not None and value.is_sparse else value


@pytest.mark.parametrize("objective", ["ranking", "rating"])
def test_the_datamodule_and_the_recommender_build_the_same_batch_for_known_users(setup, objective):
    scenario, tensors = setup
    strategy = ReadsEverything(context_for(scenario, tensors, objective))
    rec = Recommender(strategy, tensors)
    dm = CrossDomainDataModule(
        tensors,
        (),
        LoaderConfig(max_len=MAX_LEN, eval_batch_size=7),
        ratings=objective == "rating",
        reads=strategy.reads,
    )
    users = torch.cat([b.user for b in dm.eval_data["test"]])
    assert users.numel() > 10
    evaluated = {f: [] for f in ("user", "is_cold", "excluded", *sorted(READABLE), "input_ratings")}
    for batch in dm.eval_data["test"]:
        for name, rows in evaluated.items():
            rows.append(dense(getattr(batch, name)))
    served = rec.batch(
        [rec.known_history(scenario.user_ids[u]) for u in users.tolist()], users.tolist()
    )
    for name, rows in evaluated.items():
        if objective == "ranking" and name == "input_ratings":
            assert served.input_ratings is None and rows[0] is None
            continue
        assert torch.equal(torch.cat(rows), dense(getattr(served, name))), name
    # Both equal the sparse matrices built straight from the scenario's tables.
    assert torch.equal(
        dense(served.inputs),
        torch.from_numpy(tensors.input_matrix("test")[users.numpy()].toarray()),
    )
    if objective == "rating":
        expected = tensors.rating_matrix("test")[users.numpy()].toarray()
        assert torch.equal(dense(served.input_ratings), torch.from_numpy(expected))
    # A repeated interaction counts once, with its last rating.
    train = scenario.train
    repeats = train[train.duplicated(["user", "item"], keep="last")]
    checked = 0
    for user, item in repeats[["user", "item"]].itertuples(index=False):
        if user in users.tolist():
            row = users.tolist().index(user)
            assert dense(served.inputs)[row, item] == 1
            if objective == "rating":
                assert dense(served.input_ratings)[row, item] == 1.0
            checked += 1
    assert checked > 5
    # A validation item also in training keeps its own rating (0.5), not the training one's.
    val = scenario.warm[scenario.warm["split"] == "val"]
    again = val.merge(scenario.train, on=["user", "item"], suffixes=("", "_train"))
    assert len(again) > 5 and (again["rating"] == 0.5).all()
    if objective == "rating":
        rows = [users.tolist().index(u) for u in again["user"]]
        assert (dense(served.input_ratings)[rows, list(again["item"])] == 0.5).all()
    # Histories are cut to their last MAX_LEN items; someone's history is that long.
    assert (served.pooled_hist != 0).all(1).any()


@pytest.mark.parametrize("reads", [SEQUENCES, MATRIX_ROWS, frozenset({"source_hist"})])
def test_batches_hold_exactly_what_the_strategy_reads(setup, reads):
    scenario, tensors = setup
    dm = CrossDomainDataModule(
        tensors, ("target", "overlap"), LoaderConfig(max_len=MAX_LEN), reads=reads
    )
    batch = dm.eval_data["val"][0]
    assert {name for name in READABLE if name in batch} == reads
    missing = sorted(READABLE - reads)[0]
    with pytest.raises(KeyError, match=rf"UserBatch has no '{missing}'.*declares in its reads"):
        batch[missing]
    train = dm._train_batch(list(range(len(dm.train_data["user"]))))
    assert isinstance(train, TrainBatch)
    assert {name for name in READABLE if name in train} == reads - {"inputs"}
    # Row selection keeps the fields that are not per row (the catalogue's new-item mask).
    overlap = train.select(train.stream == train.stream.max())
    assert len(overlap) and (overlap.tokens == 0).all()


def test_an_unknown_read_is_an_error_that_names_the_known_ones(setup):
    _, tensors = setup
    with pytest.raises(ValueError, match=r"reads: unknown inputs \['history'\]; known"):
        CrossDomainDataModule(tensors, (), LoaderConfig(), reads=frozenset({"history"}))


@pytest.mark.parametrize("name", sorted(discover()))
def test_every_strategy_declares_what_it_reads(name):
    cls = load_strategy(name)
    assert cls.reads <= READABLE, cls.reads
    assert cls.kind, "a strategy subclasses TransferStrategy or ClosedFormStrategy"
