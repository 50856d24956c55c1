"""Shared fixtures: a small synthetic two-domain dataset with known structure."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch

from recmig.data.scenario import SOURCE, TARGET, ScenarioConfig
from recmig.data.schema import InteractionData
from recmig.encoders.item import IdItemEncoder
from recmig.objectives import load_objective
from recmig.strategy import StrategyContext
from recmig.users.interest import MeanInterest


def synthetic_data(n_users: int = 60, n_items: int = 40, per_user: int = 16, seed: int = 0):
    """Items 0..n/2-1 are 'Books', the rest 'Films'; every user rates items of both kinds."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        times = np.sort(rng.choice(10_000, size=per_user, replace=False))
        for item, t in zip(items, times, strict=True):
            rows.append((f"u{u}", f"i{item}", float(rng.integers(1, 6)), int(t)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter = inter.astype({"user_id": "string", "item_id": "string", "rating": "float32"})
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"Item number {i}" for i in range(n_items)],
            "genre": [
                "Books, Drama" if i < n_items // 2 else "Films, Action" for i in range(n_items)
            ],
        }
    ).astype("string")
    return InteractionData(interactions=inter, items=items, users=None, name="synthetic")


def context_for(scenario, tensors, objective: str = "ranking"):
    """What `recmig train` builds a strategy from (closed-form ones use only the catalogues
    and, under the rating objective, the per-item baseline ratings)."""
    return StrategyContext(
        vocab_size=tensors.vocab_size,
        dim=8,
        source_catalog=torch.from_numpy(scenario.catalog(SOURCE)),
        target_catalog=torch.from_numpy(scenario.catalog(TARGET)),
        make_item_encoder=partial(IdItemEncoder, tensors.vocab_size, 8),
        make_user_model=partial(MeanInterest, 8),
        objective=load_objective(objective).for_run({"dim": 8}, scenario, tensors.vocab_size),
    )


def custom_table_overrides(folder, data: InteractionData) -> list[str]:
    """Write ``data`` as the files `data=custom_files` reads (interactions with a domain column
    from each item's first genre, an item CSV); the overrides that select them."""
    inter = data.interactions.merge(data.items[["item_id", "genre"]], on="item_id")
    inter["domain"] = inter.pop("genre").str.split(",").str[0]
    inter.to_parquet(folder / "inter.parquet")
    data.items.to_csv(folder / "items.csv", index=False)
    return [
        "data=custom_files",
        f"data.dataset.interactions={folder / 'inter.parquet'}",
        f"data.dataset.items={folder / 'items.csv'}",
        "data.scenario.source_domains=[Books]",
        "data.scenario.target_domains=[Films]",
    ]


@pytest.fixture
def make_data():
    return synthetic_data


@pytest.fixture
def data() -> InteractionData:
    return synthetic_data()


@pytest.fixture
def scenario_cfg() -> ScenarioConfig:
    return ScenarioConfig(
        source_domains=["Books"], target_domains=["Films"], cold_fraction=0.3, seed=1
    )
