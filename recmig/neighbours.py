"""Neighbour votes: the scoring shared by the k-nearest-neighbour strategies.

Each item of a user's history (either domain) votes for its ``k`` most similar target items,
with the similarity as the vote's weight:

    score(u, j) = sum_{i in history(u), j in N_k(i)} s(i, j)

The strategies differ only in s (``itemknn``: co-interaction cosine; ``content_knn``: the
language model's text cosine). Only k weights per item are kept, computed in row blocks, so
memory grows with k x catalogue, not with its square.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recmig.batches import UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.strategy import StrategyContext

BLOCK_BYTES = 2**27
"""Size of the dense block of similarities (some items x all target items) computed at once."""


class NeighbourVotes(ClosedFormStrategy):
    """Each history item votes for its ``k`` most similar target items: (N, k) neighbours and
    weights per item, from the similarity a subclass's ``fit`` passes to
    :meth:`keep_neighbours` (computed in row blocks)."""

    def __init__(self, context: StrategyContext, k: int):
        super().__init__(context)
        if k < 1:
            raise ValueError(f"strategy.k must be an integer >= 1 (neighbours kept), got {k}")
        self.k = int(k)
        self.register_fitted("neighbours")  # (N, k) target catalogue positions per item
        self.register_fitted("similarity")  # (N, k) their weights

    def keep_neighbours(self, n_items: int, similarity: Callable[[np.ndarray], np.ndarray]):
        """Fill the fitted buffers from ``similarity(rows)``: (len(rows), N_t) weights >= 0 of
        item columns ``rows`` to every target item."""
        columns = self.target_columns()
        k = min(self.k, len(columns))
        block = max(1, BLOCK_BYTES // (4 * len(columns)))
        neighbours, weights = [], []
        for start in range(0, n_items, block):
            rows = np.arange(start, min(start + block, n_items))
            sim = similarity(rows)
            sim[rows[:, None] == columns[None, :]] = -np.inf  # an item is not its own neighbour
            # copy: a slice would keep the whole (b, N_t) argpartition result alive
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k].copy()
            neighbours.append(top)
            weights.append(np.maximum(np.take_along_axis(sim, top, axis=1), 0.0))
        self.neighbours = torch.from_numpy(np.concatenate(neighbours).astype(np.int64))
        self.similarity = torch.from_numpy(np.concatenate(weights).astype(np.float32))

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        # Each history entry (row b, token t) adds its item's k weights to row b's scores.
        inputs = batch.inputs.coalesce()
        rows, tokens = inputs.indices()
        k = self.neighbours.shape[1]
        scores = self.similarity.new_zeros(inputs.shape[0], len(self.context.target_catalog))
        scores.index_put_(
            (rows.repeat_interleave(k), self.neighbours[tokens - 1].reshape(-1)),
            (self.similarity[tokens - 1] * inputs.values().unsqueeze(1)).reshape(-1),
            accumulate=True,
        )
        return scores
