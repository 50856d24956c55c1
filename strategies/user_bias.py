"""Source-domain user bias (rating objective): the simplest transfer there is.

    r_ui = b_i + d_u,    d_u = sum_{j rated by u in the source} (r_uj - b_j) / (n_u + shrinkage)

b_i is the run's per-item baseline rating (``rating_baseline``: each item's shrunk mean
training rating), n_u the number of the user's rated source-domain interactions. A generous
rater in the source domain is predicted generous in the target domain, for cold and warm users
alike; a user without source ratings gets the item baseline. The yardstick of
``experiments/cold_start_rating_ml1m/reference_baselines.py`` ("source bias") as a strategy.

d_u is computed from the history being scored (the batch's ``input_ratings``), not stored per
training user, so a new user's ratings, or one more rating (``Recommender.update``), count at
once: the fold-in is exact.
"""

from __future__ import annotations

import torch

from recmig.batches import UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.scenario import SOURCE
from recmig.data.tensors import TrainingMatrix
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
        is_source = torch.zeros(context.vocab_size, dtype=torch.bool)
        is_source[context.source_catalog] = True
        self.register_buffer("is_source", is_source, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the bias was computed from the history carry a per-user
        # `bias` buffer; it is not needed (nor used) any more.
        state_dict.pop(prefix + "bias", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, matrix: TrainingMatrix) -> None:
        # Nothing to learn beyond the item baselines; refuse a scenario this model can't use.
        rated = matrix.ratings.tocoo()
        if not (matrix.item_domain[rated.col] == SOURCE).any():
            raise ValueError(
                "strategy=user_bias needs source-domain training ratings; the scenario has none"
            )

    def user_bias(self, ratings: torch.Tensor) -> torch.Tensor:
        """(B, vocab_size) sparse ratings of each user's history -> (B,) d_u."""
        ratings = ratings.coalesce()
        rows, tokens = ratings.indices()
        source = self.is_source[tokens]
        residual = (ratings.values() - self.objective.offsets[tokens])[source]
        n = ratings.shape[0]
        sums = residual.new_zeros(n).index_add_(0, rows[source], residual)
        counts = residual.new_zeros(n).index_add_(0, rows[source], torch.ones_like(residual))
        shrunk = counts + self.shrinkage
        return torch.where(shrunk > 0, sums / shrunk.clamp_min(1e-12), 0.0)

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        items = self.objective.offsets[self.target_catalog]
        return items.unsqueeze(0) + self.user_bias(batch.input_ratings).unsqueeze(1)
