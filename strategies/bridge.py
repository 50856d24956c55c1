"""Personalised bridges (PTUPCDR; Zhu et al., WSDM 2022).

EMCDR (:mod:`.mapping`) maps every user's source interest with one function. Here a
meta-network turns each user's source history into that user's own mapping matrix:

    c_u = sum_j softmax_j(h(e_j)) e_j            characteristic of u over source items j
    W_u = I + reshape(meta(c_u), D x D)           u's bridge (identity plus a learned residual)
    u_T = f_S(history_S(u)) W_u                   u's transferred target interest

The bridge is fit task-oriented, as in PTUPCDR: on warm overlapping users, u_T must rank the
user's own target training items high (softmax over the target catalogue), rather than match
a target embedding by MSE. Towers are frozen inside this loss (their outputs detached), so it
trains only h and meta; each tower learns from its own domain's next-item loss.

With several source domains each domain d has its own h_d and meta_d over the shared source
tower; a user's transferred interest is the mean of the domains' bridged interests over the
domains they have history in (:meth:`MappedTransfer.map_interest`).
"""

from __future__ import annotations

import torch
from torch import nn

from recmig.batches import TrainBatch
from recmig.strategy import MappedTransfer, StrategyContext
from recmig.tokens import is_item


class Bridge(MappedTransfer):
    description = "PTUPCDR: a meta-network gives each user a personal source->target bridge"

    def __init__(
        self, context: StrategyContext, meta_hidden: int = 128, bridge_weight: float = 1.0
    ):
        super().__init__(context, transfer_weight=bridge_weight)
        dim = context.dim
        self.bos = context.bos
        self.attention, self.meta = nn.ModuleList(), nn.ModuleList()
        for _ in context.source_names:
            self.attention.append(nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1)))
            meta = nn.Sequential(
                nn.Linear(dim, meta_hidden), nn.ReLU(), nn.Linear(meta_hidden, dim * dim)
            )
            nn.init.zeros_(meta[-1].weight)  # start from W_u = I for every user
            nn.init.zeros_(meta[-1].bias)
            self.meta.append(meta)

    def upgraded_key(self, name: str) -> str | None:
        parts = name.split(".")  # attention.<layer>.weight -> attention.0.<layer>.weight
        if parts[0] in ("attention", "meta") and len(parts) == 3:
            return ".".join([parts[0], "0", *parts[1:]])
        return super().upgraded_key(name)

    def bridges(self, domain: int, source_hist: torch.Tensor) -> torch.Tensor:
        """(B, L) history of one source domain -> (B, D, D) personal mapping matrices."""
        items = self.source.table(None).detach()[source_hist]
        real = is_item(source_hist, self.bos)
        scores = self.attention[domain](items).squeeze(-1).masked_fill(~real, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # no source item: c_u = 0
        characteristic = (weights.unsqueeze(-1) * items).sum(1)
        dim = items.shape[-1]
        eye = torch.eye(dim, device=items.device)
        return eye + self.meta[domain](characteristic).view(-1, dim, dim)

    def map_domain(self, domain: int, history: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the source tower is frozen here: no graph to build and drop
            source = self.source.interest(history, self.source.table(None))
        return torch.bmm(source.unsqueeze(1), self.bridges(domain, history)).squeeze(1)

    def transfer_loss(self, pairs: TrainBatch) -> torch.Tensor:
        mapped = self.map_interest(pairs.source_hist)
        targets = self.target.table(None).detach()[self.target_catalog]
        return self.objective.history_loss(mapped @ targets.T, pairs, "target", self.target_catalog)
