"""Content KNN: item-item cosine of the language model's item text, top-k target neighbours.

The content-based yardstick of text recommenders: a target item scores by how much it reads
like the items of the user's history. With t_i the item encoder's frozen language-model
features of item i (centred, unit length; see :func:`recmig_strategies.text_ease.item_text`),

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
import torch

from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import TrainingMatrix
from recmig.strategy import StrategyContext

from .text_ease import item_text

BLOCK_BYTES = 2**27
"""Size of the dense block of similarities (some items x all target items) computed at once."""


class ContentKNN(ClosedFormStrategy):
    description = "baseline: language-model text cosine, k nearest target items per history item"

    def __init__(self, context: StrategyContext, k: int = 100, alpha: float = 1.0):
        super().__init__(context)
        if k < 1:
            raise ValueError(f"strategy.k must be an integer >= 1 (neighbours kept), got {k}")
        if not alpha > 0:
            raise ValueError(f"strategy.alpha must be > 0 (similarity exponent), got {alpha}")
        self.k, self.alpha = int(k), float(alpha)
        self.register_fitted("neighbours")  # (N, k) target catalogue positions per item
        self.register_fitted("similarity")  # (N, k) their weights

    def fit(self, matrix: TrainingMatrix) -> None:
        # The training interactions are not read: the model is the item text alone.
        text = item_text(self.context, "content_knn")  # (N, d), row j is token j + 1
        n = text.shape[0]
        columns = self.target_columns()
        target = np.ascontiguousarray(text[columns].T)  # (d, N_t)
        k = min(self.k, len(columns))
        block = max(1, BLOCK_BYTES // (4 * len(columns)))
        neighbours, similarity = [], []
        for start in range(0, n, block):
            rows = np.arange(start, min(start + block, n))
            cosine = text[rows] @ target  # (b, N_t)
            cosine[rows[:, None] == columns[None, :]] = -np.inf  # an item is not its own neighbour
            # copy: a slice would keep the whole (b, N_t) argpartition result alive
            top = np.argpartition(-cosine, k - 1, axis=1)[:, :k].copy()
            neighbours.append(top)
            kept = np.maximum(np.take_along_axis(cosine, top, axis=1), 0.0)
            similarity.append(kept**self.alpha)
        self.neighbours = torch.from_numpy(np.concatenate(neighbours).astype(np.int64))
        self.similarity = torch.from_numpy(np.concatenate(similarity).astype(np.float32))

    def target_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Each history entry (row b, token t) adds its item's k weights to row b's scores.
        inputs = batch["inputs"].coalesce()
        rows, tokens = inputs.indices()
        k = self.neighbours.shape[1]
        scores = self.similarity.new_zeros(inputs.shape[0], len(self.context.target_catalog))
        scores.index_put_(
            (rows.repeat_interleave(k), self.neighbours[tokens - 1].reshape(-1)),
            (self.similarity[tokens - 1] * inputs.values().unsqueeze(1)).reshape(-1),
            accumulate=True,
        )
        return scores
