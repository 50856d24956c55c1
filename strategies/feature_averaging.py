"""Feature averaging: mix a user's source and target interests with a fixed weight.

    u_T = a * f(history_S(u)) + (1 - a) * f(history_T(u))

One shared item encoder and user model serve both domains (next-item losses on the source and
on the target stream), so both interests live in one space; with a text encoder that space is
the language model's, which is what lets a film history say something about books. A cold user
has no target history and gets the source side alone (a = 1); a user without source history
gets the target side alone (a = 0).
"""

from __future__ import annotations

import torch

from recmig.strategy import StrategyContext, Tower, TransferStrategy, catalog_cross_entropy


class FeatureAveraging(TransferStrategy):
    description = "u_T = a * source interest + (1 - a) * target interest, shared encoder"
    streams = ("source", "target")

    def __init__(self, context: StrategyContext, alpha: float = 0.5):
        super().__init__(context)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"strategy.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.tower = Tower(context)
        self.bos = context.vocab_size - 1

    def _has_items(self, hist: torch.Tensor) -> torch.Tensor:
        """(B,) whether a history holds any item besides padding and BOS."""
        return ((hist != 0) & (hist != self.bos)).any(1)

    def mix(
        self,
        source: torch.Tensor,
        target: torch.Tensor,
        has_source: torch.Tensor,
        has_target: torch.Tensor,
    ) -> torch.Tensor:
        """The averaging rule; source (B, D) or (B, 1, D), target broadcastable to it."""
        shape = (-1,) + (1,) * (target.dim() - 1)
        a = torch.full(has_source.shape, self.alpha, device=target.device, dtype=target.dtype)
        a = torch.where(has_source, a, torch.zeros_like(a))
        a = torch.where(has_target, a, torch.ones_like(a))
        a = a.view(shape)
        return a * source + (1 - a) * target

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source_loss = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        part = self.rows(batch, "target")
        table = self.tower.items()
        target = self.tower.interests(part["tokens"], table)
        source = self.tower.interest(part["source_hist"], table).unsqueeze(1)
        has_target = torch.ones_like(part["user"], dtype=torch.bool)
        mixed = self.mix(source, target, self._has_items(part["source_hist"]), has_target)
        target_loss = catalog_cross_entropy(mixed, part["labels"], table, self.target_catalog)
        return {
            "loss": source_loss + target_loss,
            "loss_source": source_loss,
            "loss_target": target_loss,
        }

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.tower.items()
        source = self.tower.interest(batch["source_hist"], table)
        target = self.tower.interest(batch["target_hist"], table)
        return self.mix(
            source,
            target,
            self._has_items(batch["source_hist"]),
            self._has_items(batch["target_hist"]),
        )

    def target_items(self) -> torch.Tensor:
        return self.tower.items()[self.target_catalog]
