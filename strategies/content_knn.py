"""Content KNN: item-item cosine of the language model's item text, top-k target neighbours.

The content-based yardstick of text recommenders: a target item scores by how much it reads
like the items of the user's history. With t_i the item encoder's frozen language-model
features of item i (centred, unit length; see :func:`recmig.linear.item_text`),

    s(i, j) = max(t_i . t_j, 0) ** alpha                               (i != j)
    score(u, j) = sum_{i in history(u), j in N_k(i)} s(i, j)           for target items j

N_k(i) are the k target items whose text is most similar to item i's (i of either domain;
i itself excluded): each item a user has, source items included, votes for its k nearest
target items, exactly as in ItemKNN with text instead of co-interactions. ``alpha`` > 1
sharpens the weights toward the closest neighbours, < 1 flattens them.

It reads no interaction at all: fitting needs only the catalogue and the item text, so it runs
on every scenario, scores target items nobody has interacted with, and still fits when the
target domain has no training interaction (every target user cold). Only k weights per item
are kept (N x k neighbours and weights), computed in row blocks, so memory grows with
k x catalogue, not with its square.
"""

from __future__ import annotations

import numpy as np

from recmig.data.tensors import TrainingMatrix
from recmig.linear import item_text
from recmig.neighbours import NeighbourVotes
from recmig.strategy import StrategyContext


class ContentKNN(NeighbourVotes):
    description = "baseline: language-model text cosine, k nearest target items per history item"

    def __init__(self, context: StrategyContext, k: int = 100, alpha: float = 1.0):
        super().__init__(context, k)
        if not alpha > 0:
            raise ValueError(f"strategy.alpha must be > 0 (similarity exponent), got {alpha}")
        self.alpha = float(alpha)

    def fit(self, matrix: TrainingMatrix) -> None:
        # The training interactions are not read: the model is the item text alone.
        text = item_text(self.context, "content_knn")  # (N, d), row j is token j + 1
        target = np.ascontiguousarray(text[self.target_columns()].T)  # (d, N_t)

        def similarity(rows: np.ndarray) -> np.ndarray:
            # max(cos, 0) ** alpha is monotone in the cosine: the same neighbours it would pick
            return np.maximum(text[rows] @ target, 0.0) ** self.alpha

        self.keep_neighbours(text.shape[0], similarity)
