"""Domain-weighted fusion of a user's source-side and target-side interests.

    F_t = a * F_tA + (1 - a) * F_tB

F_tA = f(history_S(u)) is the interest read from the source domain, F_tB = f(history_T(u)) the
one read from the target domain; one item encoder and user model serve both, so both live in
one space (with a text encoder, the language model's). The weight ``a`` is

- ``fixed``: a constant (this is feature averaging, :mod:`.feature_averaging`);
- ``learned``: one scalar a = sigmoid(theta), learned with the model;
- ``gate``: per user, a_u = sigmoid(w . [F_tA; F_tB] + b), so users whose two histories agree
  can lean on the source side more than users whose tastes differ across domains.

A user without target history (cold start) gets a = 1, a user without source history a = 0, so
a = 1 and a = 0 reduce exactly to the single-domain sides. Trained with next-item losses on
both domains; the target loss uses the fused interest.
"""

from __future__ import annotations

import torch
from torch import nn

from recmig.data.loaders import is_item
from recmig.strategy import StrategyContext, Tower, TransferStrategy

MODES = ("fixed", "learned", "gate")


class Fusion(TransferStrategy):
    description = "F_t = a * source-side + (1 - a) * target-side interest; a fixed/learned/gated"
    streams = ("source", "target")
    objectives = ("ranking", "rating")

    def __init__(self, context: StrategyContext, mode: str = "gate", alpha: float = 0.5):
        super().__init__(context)
        if mode not in MODES:
            raise ValueError(f"strategy.mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"strategy.alpha must be in [0, 1], got {alpha}")
        self.mode = mode
        self.alpha = alpha
        self.tower = Tower(context)
        self.bos = context.bos
        if mode == "learned":
            self.logit = nn.Parameter(torch.logit(torch.tensor(alpha).clamp(1e-4, 1 - 1e-4)))
        elif mode == "gate":
            self.gate = nn.Linear(2 * context.dim, 1)

    def _has_items(self, hist: torch.Tensor) -> torch.Tensor:
        """(B,) whether a history holds any item besides padding and BOS."""
        return is_item(hist, self.bos).any(1)

    def weight(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """a for each row: source (B, 1, D) or (B, D); target (B, L, D) or (B, D)."""
        if self.mode == "fixed":
            return torch.full(target.shape[:-1], self.alpha, device=target.device)
        if self.mode == "learned":
            return torch.sigmoid(self.logit).expand(target.shape[:-1])
        pair = torch.cat([source.expand_as(target), target], dim=-1)
        return torch.sigmoid(self.gate(pair)).squeeze(-1)

    def fuse(self, source, target, has_source, has_target) -> torch.Tensor:
        """The fusion rule with the cold-start and no-source cases made exact."""
        a = self.weight(source, target)
        extra = (1,) * (a.dim() - 1)
        a = torch.where(has_source.view(-1, *extra), a, torch.zeros_like(a))
        a = torch.where(has_target.view(-1, *extra), a, torch.ones_like(a))
        return a.unsqueeze(-1) * source + (1 - a.unsqueeze(-1)) * target

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source_loss = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        part = self.rows(batch, "target")
        table = self.tower.items()
        target = self.tower.interests(part["tokens"], table)
        source = self.tower.interest(part["source_hist"], table).unsqueeze(1)
        has_target = torch.ones_like(part["user"], dtype=torch.bool)
        fused = self.fuse(source, target, self._has_items(part["source_hist"]), has_target)
        target_loss = self.next_item_loss(fused, part, table, self.target_catalog)
        return {
            "loss": source_loss + target_loss,
            "loss_source": source_loss,
            "loss_target": target_loss,
        }

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.tower.items()
        source = self.tower.interest(batch["source_hist"], table)
        target = self.tower.interest(batch["target_hist"], table)
        return self.fuse(
            source,
            target,
            self._has_items(batch["source_hist"]),
            self._has_items(batch["target_hist"]),
        )

    def target_items(self) -> torch.Tensor:
        return self.tower.items()[self.target_catalog]
