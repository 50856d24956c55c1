"""A synthetic two-domain dataset of any size, for benchmarks at catalogue sizes the bundled
MovieLens files don't reach (``configs/data/synthetic_large.yaml``: 15k target items).

Users interact with ``per_user`` items of each domain, drawn with Zipf-like popularity
(weight of the r-th most popular item ~ r^-exponent), at increasing timestamps. Items carry
a title and a ``genre`` naming their domain (``Books`` source, ``Films`` target), so the
scenario builder splits them like MovieLens genres.

With ``clusters = 0`` (the default) it has no structure for a model to learn beyond popularity:
timing, not accuracy, is what it is for. ``clusters = C`` gives it a taste to learn: item j of
a domain belongs to cluster j mod C, each user has one cluster in both domains, and a share
``affinity`` of their interactions comes from it (by popularity within the cluster), the rest
from the whole domain. A user's history then says which items they will pick next, in their own
domain and across domains, so accuracy measured on it compares losses and models (not with
real data: the structure is the simplest one there is).
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
    clusters: int = 0,
    affinity: float = 0.5,
) -> InteractionData:
    for name, value in (
        ("users", users),
        ("source_items", source_items),
        ("target_items", target_items),
        ("per_user", per_user),
    ):
        if value < 1:
            raise ValueError(f"data.dataset.{name} must be a positive integer, got {value}")
    if clusters < 0 or clusters > min(source_items, target_items):
        raise ValueError(
            f"data.dataset.clusters must be in [0, {min(source_items, target_items)}] (at most "
            f"one cluster per item of the smaller domain), got {clusters}"
        )
    if not 0.0 <= affinity <= 1.0:
        raise ValueError(f"data.dataset.affinity must be in [0, 1], got {affinity}")
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, clusters, size=users) if clusters else None
    frames, start = [], 0
    for count in (source_items, target_items):
        weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
        picked = rng.choice(count, size=(users, per_user), p=weights / weights.sum())
        if taste is not None:
            picked = with_taste(picked, taste, clusters, affinity, weights, rng)
        frames.append(picked + start)
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


def with_taste(
    picked: np.ndarray,
    taste: np.ndarray,
    clusters: int,
    affinity: float,
    weights: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Replace a share ``affinity`` of each user's picks (users, per_user) by items of their
    cluster ``taste`` (users,), the r-th of a cluster (item r * clusters + cluster) drawn with
    the popularity weight of rank r."""
    count = len(weights)
    ranks = -(-count // clusters)  # items in the largest cluster
    within = weights[:ranks] / weights[:ranks].sum()
    rank = rng.choice(ranks, size=picked.shape, p=within)
    item = rank * clusters + taste[:, None]
    # (the last rank of a cluster may not exist when clusters do not divide the catalogue)
    item = np.where(item < count, item, taste[:, None])
    return np.where(rng.random(picked.shape) < affinity, item, picked)
