"""ItemKNN: item-item cosine similarity over both domains' training matrix, top-k neighbours.

    s(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)     U_i: users of item i
    score(u, j) = sum_{i in history(u), j in N_k(i)} s(i, j)        for target items j

N_k(i) are the k target items most similar to item i (of either domain; i itself excluded):
each item a user has, source items included, votes for its k nearest target items, which is
how a cold user's source history reaches the target catalogue. Only k weights per item are
kept (N x k neighbours and weights), computed in row blocks, so memory grows with
k x catalogue, not with its square.
"""

from __future__ import annotations

import numpy as np

from recmig.data.tensors import TrainingMatrix
from recmig.neighbours import NeighbourVotes
from recmig.strategy import StrategyContext


class ItemKNN(NeighbourVotes):
    description = "baseline: item-item cosine over both domains, k nearest target items per item"

    def __init__(self, context: StrategyContext, k: int = 100, shrink: float = 0.0):
        super().__init__(context, k)
        if shrink < 0:
            raise ValueError(f"strategy.shrink must be >= 0, got {shrink}")
        self.shrink = float(shrink)

    def fit(self, matrix: TrainingMatrix) -> None:
        x = self.item_matrix(matrix).tocsc()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        columns = self.target_columns()
        target = x[:, columns]

        def cosine(rows: np.ndarray) -> np.ndarray:
            overlap = (x[:, rows].T @ target).toarray()  # (b, N_t) users in common
            denominator = norms[rows][:, None] * norms[columns][None, :] + self.shrink
            return np.divide(
                overlap, denominator, out=np.zeros_like(overlap), where=denominator > 0
            )

        self.keep_neighbours(x.shape[1], cosine)
