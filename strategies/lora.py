"""Adapter fine-tuning of the language model: adapt on the source domain, then on the target.

The item encoder is the language model itself with peft adapters (``encoder=lora_text``; see
:mod:`recmig.encoders.adapted`): phase 1 (``source_epochs``) trains adapters, projection and user
model by next-item prediction on source sequences; phase 2 continues on target sequences. The
text space the adapters learn on the source domain is the bridge, so a cold user is scored with
their source-history interest and a warm user with their target-history interest:

    u_T = f(history_T(u)) for warm users,   u_T = f(history_S(u)) for cold users,
    score(u, i) = u_T . W LM_adapted(text_i)

Only adapters, projection and user model train; the language model's weights stay frozen.
``strategy=lora encoder=text`` runs the same schedule on the frozen encoder, for comparison.
"""

from __future__ import annotations

import torch

from recmig.strategy import Phase, StrategyContext, Tower, TransferStrategy


class LoRA(TransferStrategy):
    description = "peft adapters on the text encoder: adapt on source, then on target"
    streams = ("source", "target")
    objectives = ("ranking", "rating")

    def __init__(self, context: StrategyContext, source_epochs: int = 2):
        super().__init__(context)
        if source_epochs < 1:
            raise ValueError(f"strategy.source_epochs must be >= 1, got {source_epochs}")
        self.source_epochs = source_epochs
        self.tower = Tower(context)

    @property
    def phases(self) -> tuple[Phase, ...]:
        return (Phase(("source",), self.source_epochs), Phase(("target",)))

    def training_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        source = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        target = self.stream_loss(self.tower, batch, "target", self.target_catalog)
        return {"loss": source + target, "loss_source": source, "loss_target": target}

    def target_interest(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        table = self.tower.table(None)
        source = self.tower.interest(batch["source_hist"], table)
        target = self.tower.interest(batch["target_hist"], table)
        return torch.where(batch["is_cold"].unsqueeze(1), source, target)

    def target_items(self) -> torch.Tensor:
        return self.tower.table(None)[self.target_catalog]
