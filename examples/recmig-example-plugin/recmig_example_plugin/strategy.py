"""Zero-shot transfer: one tower learns both domains; cold users keep their source interest.

    u_T = f(history_T(u))  for warm users,   u_T = f(history_S(u))  for cold users

Nothing is fit to carry interest across domains: the transfer is whatever the shared item
encoder (e.g. a language model over item text) and user model give for free.
"""

from __future__ import annotations

import torch

from recmig.strategy import StrategyContext, Tower, TransferStrategy


class ZeroShot(TransferStrategy):
    description = "example plugin: shared tower, cold users scored with their source interest"
    streams = ("source", "target")

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self.tower = Tower(context)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        target = self.stream_loss(self.tower, batch, "target", self.target_catalog)
        return {"loss": source + target, "loss_source": source, "loss_target": target}

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.tower.items()
        source = self.tower.interest(batch["source_hist"], table)
        target = self.tower.interest(batch["target_hist"], table)
        return torch.where(batch["is_cold"].unsqueeze(1), source, target)

    def target_items(self) -> torch.Tensor:
        return self.tower.items()[self.target_catalog]
