"""Pooled training: one model over both domains' interactions merged in time order.

score(u, i) = f(history_S+T(u)) . e_i with the next-item softmax over the union of both
catalogues during training, and over the target catalogue at evaluation. A cold user's history
is their source history, so the transfer is implicit in the shared model.
"""

from __future__ import annotations

import torch

from recmig.strategy import StrategyContext, Tower, TransferStrategy


class Pooled(TransferStrategy):
    description = "baseline: one model trained on both domains merged in time order"
    streams = ("pooled",)
    objectives = ("ranking", "rating")

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self.tower = Tower(context)
        self.register_buffer(
            "all_items",
            torch.cat([context.source_catalog, context.target_catalog]),
            persistent=False,
        )

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.stream_loss(self.tower, batch, "pooled", self.all_items)}

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.tower.interest(batch["pooled_hist"], self.tower.table(None))

    def target_items(self) -> torch.Tensor:
        return self.tower.table(None)[self.target_catalog]
