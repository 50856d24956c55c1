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

Next-item windows never ask the cold-start question, so ``set_weight`` > 0 adds it to phase 2
as a loss on warm overlapping users (``overlap`` rows), as for ``pooled``:

    L_2 = L_next-item(T) + w * ( - mean_{i in T(u)} log softmax_i( f(history_S(u)) . E_T ) )

(:meth:`TransferStrategy.set_loss`): the adapters then learn text vectors from which a source
history ranks the user's target items, not only the next target item.
"""

from __future__ import annotations

import torch

from recmig.batches import TrainBatch, UserBatch
from recmig.strategy import Phase, StrategyContext, Tower, TransferStrategy, set_weight_streams


class LoRA(TransferStrategy):
    description = "peft adapters on the text encoder: adapt on source, then on target"
    streams = ("source", "target")
    reads = frozenset({"source_hist", "target_hist"})
    objectives = ("ranking", "rating")

    def __init__(self, context: StrategyContext, source_epochs: int = 2, set_weight: float = 0.0):
        super().__init__(context)
        if source_epochs < 1:
            raise ValueError(f"strategy.source_epochs must be >= 1, got {source_epochs}")
        self.source_epochs = source_epochs
        self.streams = set_weight_streams(self.streams, set_weight)
        self.set_weight = set_weight
        self.tower = Tower(context)

    @property
    def phases(self) -> tuple[Phase, ...]:
        target_phase = set_weight_streams(("target",), self.set_weight)
        return (Phase(("source",), self.source_epochs), Phase(target_phase))

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        source = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        target = self.stream_loss(self.tower, batch, "target", self.target_catalog)
        losses = {"loss": source + target, "loss_source": source, "loss_target": target}
        return self.with_set_loss(losses, self.set_weight, self.tower, batch, self.cold_interest)

    def cold_interest(self, pairs: TrainBatch, table: torch.Tensor) -> torch.Tensor:
        """A cold user is ranked by the interest of their source history."""
        return self.tower.interest(pairs.source_hist, table)

    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        table = self.tower.table(None)
        source = self.tower.interest(batch.source_hist, table)
        target = self.tower.interest(batch.target_hist, table)
        return torch.where(batch.is_cold.unsqueeze(1), source, target)

    def target_items(self) -> torch.Tensor:
        return self.tower.table(None)[self.target_catalog]
