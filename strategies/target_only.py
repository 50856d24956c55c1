"""Target-only baseline: the yardstick every transfer strategy is compared with.

score(u, i) = f_T(history_T(u)) . e_i, trained by next-item cross-entropy on target data only.
A cold user has an empty target history, so f_T sees only BOS: the ranking it gets is the
model's learned "first item" prior, close to popularity. Also runs single-domain scenarios
(protocol P1).
"""

from __future__ import annotations

import torch

from recmig.batches import TrainBatch, UserBatch
from recmig.strategy import StrategyContext, Tower, TransferStrategy


class TargetOnly(TransferStrategy):
    description = "baseline: learns from target-domain data only; cold users get its BOS prior"
    streams = ("target",)
    reads = frozenset({"target_hist"})
    objectives = ("ranking", "rating")
    needs_source = False

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self.tower = Tower(context)

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        return {"loss": self.stream_loss(self.tower, batch, "target", self.target_catalog)}

    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        return self.tower.interest(batch.target_hist, self.tower.table(None))

    def target_items(self) -> torch.Tensor:
        return self.tower.table(None)[self.target_catalog]
