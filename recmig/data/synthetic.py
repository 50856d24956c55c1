"""A synthetic two-domain dataset of any size, for benchmarks at catalogue sizes the bundled
MovieLens files don't reach (``configs/data/synthetic_large.yaml``: 15k target items).

Users interact with ``per_user`` items of each domain, drawn with Zipf-like popularity
(weight of the r-th most popular item ~ r^-exponent), at increasing timestamps. Items carry
a title and a ``genre`` naming their domain (``Books`` source, ``Films`` target), so the
scenario builder splits them like MovieLens genres. Timing, not accuracy, is what it is for:
it has no structure for a model to learn beyond popularity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recmig.data.schema import STRING_DTYPE, InteractionData


def synthetic_interactions(
    users: int = 20_000,
    source_items: int = 5_000,
    target_items: int = 15_000,
    per_user: int = 20,
    exponent: float = 0.8,
    seed: int = 0,
) -> InteractionData:
    for name, value in (
        ("users", users),
        ("source_items", source_items),
        ("target_items", target_items),
        ("per_user", per_user),
    ):
        if value < 1:
            raise ValueError(f"data.dataset.{name} must be a positive integer, got {value}")
    rng = np.random.default_rng(seed)
    frames, start = [], 0
    for count in (source_items, target_items):
        weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
        picked = rng.choice(count, size=(users, per_user), p=weights / weights.sum()) + start
        frames.append(picked)
        start += count
    items = np.concatenate(frames, axis=1)  # (users, 2 * per_user): source then target
    times = np.sort(rng.integers(0, 10**9, size=items.shape), axis=1)
    order = rng.permuted(np.tile(np.arange(items.shape[1]), (users, 1)), axis=1)
    items = np.take_along_axis(items, order, axis=1)  # domains interleaved in time
    interactions = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(users), items.shape[1]).astype(str),
            "item_id": items.ravel().astype(str),
            "rating": np.full(items.size, np.nan, dtype=np.float32),
            "timestamp": times.ravel().astype(np.int64),
        }
    ).astype({"user_id": STRING_DTYPE, "item_id": STRING_DTYPE})
    total = source_items + target_items
    catalogue = pd.DataFrame(
        {
            "item_id": np.arange(total).astype(str),
            "title": [f"Item {i}" for i in range(total)],
            "genre": ["Books"] * source_items + ["Films"] * target_items,
        }
    ).astype(STRING_DTYPE)
    return InteractionData(interactions, catalogue, users=None, name="synthetic")
