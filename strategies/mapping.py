"""Embedding mapping (EMCDR; Man et al., IJCAI 2017).

Each domain has its own tower (item encoder + user model) trained by next-item loss. A mapping
network g learns to turn a user's source interest into their target interest on warm users
who have both:

    min_g  sum_{u warm, overlapping} || g(f_S(history_S(u))) - f_T(history_T(u)) ||^2

and a cold user is scored with g(f_S(history_S(u))). The interests are detached in the mapping
loss, as in EMCDR's second stage: the mapping follows the towers and never pulls them.

With several source domains there is one map g_d per domain, over the shared source tower's
interest in that domain's history; a user's transferred interest is the mean of g_d over the
domains they have history in (:meth:`MappedTransfer.map_interest`), fit jointly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recmig.batches import TrainBatch
from recmig.strategy import MappedTransfer, StrategyContext


class Mapping(MappedTransfer):
    description = "EMCDR: an MLP maps source interest to target interest, fit on warm users"

    def __init__(
        self, context: StrategyContext, hidden_dim: int = 128, mapping_weight: float = 1.0
    ):
        super().__init__(context, transfer_weight=mapping_weight)
        dim = context.dim
        self.mappers = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, dim))
            for _ in context.source_names
        )

    def upgraded_key(self, name: str) -> str | None:
        if name.startswith("mapper."):
            return "mappers.0." + name.removeprefix("mapper.")
        return super().upgraded_key(name)

    def map_domain(self, domain: int, history: torch.Tensor) -> torch.Tensor:
        source = self.source.interest(history, self.source.table(None))
        return self.mappers[domain](source.detach())

    def transfer_loss(self, pairs: TrainBatch) -> torch.Tensor:
        mapped = self.map_interest(pairs.source_hist)  # (before the target pass: same
        with torch.no_grad():  # dropout draws as ever)
            target = self.target.interest(pairs.target_hist, self.target.table(None))
        return F.mse_loss(mapped, target)
