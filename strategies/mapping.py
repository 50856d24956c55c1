"""Embedding mapping (EMCDR; Man et al., IJCAI 2017).

Each domain has its own tower (item encoder + user model) trained by next-item loss. A mapping
network g learns to turn a user's source interest into their target interest on warm users
who have both:

    min_g  sum_{u warm, overlapping} || g(f_S(history_S(u))) - f_T(history_T(u)) ||^2

and a cold user is scored with g(f_S(history_S(u))). The interests are detached in the mapping
loss, as in EMCDR's second stage: the mapping follows the towers and never pulls them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recmig.strategy import StrategyContext, Tower, TransferStrategy


class Mapping(TransferStrategy):
    description = "EMCDR: an MLP maps source interest to target interest, fit on warm users"
    streams = ("source", "target", "overlap")

    def __init__(
        self, context: StrategyContext, hidden_dim: int = 128, mapping_weight: float = 1.0
    ):
        super().__init__(context)
        self.source = Tower(context)
        self.target = Tower(context)
        self.mapper = nn.Sequential(
            nn.Linear(context.dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, context.dim)
        )
        self.mapping_weight = mapping_weight

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source_loss = self.stream_loss(self.source, batch, "source", self.source_catalog)
        target_loss = self.stream_loss(self.target, batch, "target", self.target_catalog)
        pairs = self.rows(batch, "overlap")
        if len(pairs["user"]):
            with torch.no_grad():
                source = self.source.interest(pairs["source_hist"])
                target = self.target.interest(pairs["target_hist"])
            mapping_loss = F.mse_loss(self.mapper(source), target)
        else:
            mapping_loss = source_loss.new_zeros(())
        loss = source_loss + target_loss + self.mapping_weight * mapping_loss
        return {
            "loss": loss,
            "loss_source": source_loss,
            "loss_target": target_loss,
            "loss_mapping": mapping_loss,
        }

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mapped = self.mapper(self.source.interest(batch["source_hist"]))
        own = self.target.interest(batch["target_hist"])
        return torch.where(batch["is_cold"].unsqueeze(1), mapped, own)

    def target_items(self) -> torch.Tensor:
        return self.target.items()[self.target_catalog]
