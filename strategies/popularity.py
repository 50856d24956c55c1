"""Most-popular baseline, in closed form: the floor any personalised strategy must clear.

    score(u, i) = |{v : (v, i) in training}|     for every target item i and every user u

Counts are over all users' training interactions with target items, so it needs no source
domain and runs on single-domain scenarios too. Ties keep catalogue order.
"""

from __future__ import annotations

import numpy as np
import torch

from recmig.batches import UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.tensors import TrainingMatrix
from recmig.strategy import StrategyContext


class Popularity(ClosedFormStrategy):
    description = "baseline: target items by training interaction count, the same for every user"
    reads = frozenset()  # the same list for every user

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self.register_fitted("counts")

    def fit(self, matrix: TrainingMatrix) -> None:
        counts = np.asarray(self.item_matrix(matrix).sum(axis=0)).ravel()
        self.counts = torch.from_numpy(counts[self.target_columns()].astype(np.float32))

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        return self.counts.expand(len(batch.user), -1)
