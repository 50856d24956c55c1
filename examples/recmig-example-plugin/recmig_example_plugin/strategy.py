"""Popularity learned as a plugin: one trained logit per target item, the same for every user.

    score(u, i) = b_i,   b = argmax sum_{(u, i) in target training data} log softmax(b)_i

The maximum-likelihood logits are the log training frequencies, so it converges to recmig's
built-in closed-form ``popularity``; it is here to show a trained strategy plugin in a few
lines. As a dot product: every user's interest is [1], item i's vector is [b_i].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recmig.batches import TrainBatch, UserBatch
from recmig.strategy import StrategyContext, TransferStrategy
from recmig.tokens import catalog_positions


class LearnedPopularity(TransferStrategy):
    description = "example plugin: popularity as learned logits, the same for every user"
    streams = ("target",)
    reads = frozenset()  # no history: every user gets the same list
    needs_source = False

    def __init__(self, context: StrategyContext):
        super().__init__(context)
        self.logits = nn.Parameter(torch.zeros(len(context.target_catalog)))
        self.register_buffer(
            "local", catalog_positions(context.target_catalog, context.vocab_size), persistent=False
        )

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        labels = self.rows(batch, "target").labels
        labels = labels[labels != 0]
        logits = self.logits.expand(len(labels), -1)
        return {"loss": F.cross_entropy(logits, self.local[labels])}

    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        return self.logits.new_ones(len(batch), 1)

    def target_items(self) -> torch.Tensor:
        return self.logits.unsqueeze(1)
