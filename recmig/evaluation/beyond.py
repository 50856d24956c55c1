"""Beyond-accuracy metrics of the test top-K lists, per user group.

With ``p_i`` the share of users with target training interactions who interacted with item
``i`` (its training popularity):

    coverage@K = |union of the group's top-K lists| / |target catalogue|
                 (aggregate diversity: how much of the catalogue is ever recommended)
    novelty@K  = mean over users and list positions of -log2(p_i)
                 (self-information, Zhou et al. 2010; p_i smoothed as (c_i + 1) / (n + 1)
                 so that never-seen items have a finite, maximal novelty)
    arp@K      = mean over users and list positions of p_i
                 (average recommendation popularity, Abdollahpouri et al. 2019: the higher,
                 the more a model leans on popular items)
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def item_popularity(train: pd.DataFrame, catalog: np.ndarray) -> tuple[np.ndarray, int]:
    """Distinct training users per catalogue position (target items), and how many users."""
    inside = train[train["item"].isin(catalog)]
    counts = inside.groupby("item")["user"].nunique()
    return counts.reindex(catalog, fill_value=0).to_numpy(), int(inside["user"].nunique())


def beyond_accuracy(
    top: np.ndarray, counts: np.ndarray, n_users: int, k: int = 10
) -> dict[str, float]:
    """top (U, >=k) catalogue positions, counts (N,) per position -> coverage/novelty/arp."""
    lists = np.asarray(top)[:, :k]
    smoothed = (counts + 1) / (n_users + 1)
    return {
        f"coverage@{k}": float(len(np.unique(lists)) / len(counts)),
        f"novelty@{k}": float(np.mean(-np.log2(smoothed[lists]))),
        f"arp@{k}": float(np.mean(counts[lists] / max(n_users, 1))),
    }
