"""Source-domain user bias (rating objective): the simplest transfer there is.

    r_ui = b_i + d_u,    d_u = sum_{j rated by u in the source} (r_uj - b_j) / (n_u + shrinkage)

b_i is the run's per-item baseline rating (``rating_baseline``: each item's shrunk mean
training rating), n_u the number of the user's rated source-domain training interactions. A
generous rater in the source domain is predicted generous in the target domain, for cold and
warm users alike; a user without source ratings gets the item baseline. The yardstick of
``experiments/cold_start_rating_ml1m/reference_baselines.py`` ("source bias") as a strategy.
"""

from __future__ import annotations

import numpy as np
import torch

from recmig.closed_form import ClosedFormStrategy
from recmig.data.loaders import TrainingMatrix
from recmig.data.scenario import SOURCE
from recmig.strategy import StrategyContext


class UserBias(ClosedFormStrategy):
    description = "rating baseline: item baseline + the user's mean residual in the source domain"
    objectives = ("rating",)
    needs_source = True

    def __init__(self, context: StrategyContext, shrinkage: float = 10.0):
        super().__init__(context)
        if shrinkage < 0:
            raise ValueError(f"strategy.shrinkage must be >= 0, got {shrinkage}")
        self.shrinkage = shrinkage
        self.register_fitted("bias")

    def fit(self, matrix: TrainingMatrix) -> None:
        ratings = matrix.ratings.tocoo()
        source = matrix.item_domain[ratings.col] == SOURCE
        if not source.any():
            raise ValueError(
                "strategy=user_bias needs source-domain training ratings; the scenario has none"
            )
        users, items = ratings.row[source], ratings.col[source]
        residual = ratings.data[source] - self.rating_offsets.cpu().numpy()[items]
        n_users = matrix.ratings.shape[0]
        sums = np.bincount(users, weights=residual, minlength=n_users)
        counts = np.bincount(users, minlength=n_users)
        shrunk = counts + self.shrinkage
        mean = np.divide(sums, shrunk, out=np.zeros(n_users), where=shrunk > 0)
        self.bias = torch.from_numpy(mean.astype(np.float32))

    def target_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = self.rating_offsets[self.target_catalog]
        return items.unsqueeze(0) + self.bias[batch["user"]].unsqueeze(1)
