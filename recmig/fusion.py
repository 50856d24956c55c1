"""Domain-weighted fusion: one tower reads every domain, a weighting component mixes them.

    F_t = sum_d w_d F_td + w_T F_tT,      sum_d w_d + w_T = 1

F_td = f(history_d(u)) is the interest read from source domain d, F_tT = f(history_T(u)) the
one read from the target domain; one item encoder and user model serve every domain, so all
live in one space. :class:`DomainFusion` is the strategy machinery (losses, fused scoring,
per-user weights in the test records); how w is chosen is a component
(:class:`DomainWeights`): fixed constants (:class:`FixedWeights`), global learned weights
(:class:`LearnedWeights`) or a per-user gate (:class:`GatedWeights`). The strategies
``fusion`` and ``feature_averaging`` pick one.

A domain in which the user has no history gets weight 0 and its share goes to the others: a
cold-start user is fused from their source domains alone, a user without source history reads
the target side alone, so w = (1, 0) and (0, 1) reduce exactly to the single-domain sides.
Trained with next-item losses on the merged source stream and on the target stream; the
target loss uses the fused interest at every position of the target window. ``set_weight`` > 0
adds the cold-start question on warm overlapping users (:meth:`TransferStrategy.set_loss`)
with F_t(u | no target), the fusion of the user's source domains alone (what a cold user gets).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import nn

from recmig.batches import TrainBatch, UserBatch
from recmig.strategy import (
    StrategyContext,
    Tower,
    TransferStrategy,
    has_items,
    set_weight_streams,
)
from recmig.tokens import is_item

MASKED = -1e9
"""Logit of a domain without history: finite, so no 0 * inf reaches a gradient."""


def item_count(history: torch.Tensor, bos: int) -> torch.Tensor:
    """(B,) number of items (not padding, not BOS) in each (B, L) history."""
    return is_item(history, bos).sum(1)


def source_alphas(alpha: float | list[float], names: tuple[str, ...]) -> list[float]:
    """``alpha`` as one weight per source domain (a number: the total, split equally)."""
    if isinstance(alpha, int | float):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"strategy.alpha must be in [0, 1], got {alpha}")
        return [float(alpha) / len(names)] * len(names)
    alphas = [float(a) for a in alpha]
    if len(alphas) != len(names):
        raise ValueError(
            f"strategy.alpha has {len(alphas)} weights but the scenario has {len(names)} "
            f"source domains {list(names)}: give one weight per source domain (or one number)"
        )
    if min(alphas) < 0 or sum(alphas) > 1.0 + 1e-6:
        raise ValueError(
            f"strategy.alpha must be weights >= 0 that sum to at most 1 (the target gets the "
            f"rest), got {alphas}"
        )
    return alphas


def start_logits(alphas: list[float]) -> torch.Tensor:
    """Logits whose softmax with the target's logit 0 gives ``alphas`` (and the target the
    rest): logit_d = logit(alpha_d / (alpha_d + alpha_T)); one domain: logit(alpha)."""
    rest = max(1.0 - sum(alphas), 0.0)
    shares = [alphas[0]] if len(alphas) == 1 else [a / max(a + rest, 1e-12) for a in alphas]
    return torch.logit(torch.tensor(shares).clamp(1e-4, 1 - 1e-4))


def even_weights(present: torch.Tensor, positions: int) -> torch.Tensor:
    """(B, S + 1, P) the weights of a user without history anywhere: the source domains
    evenly (an empty history's interest is the prior), the target 0."""
    n = present.shape[1] - 1
    even = torch.zeros(n + 1, device=present.device)
    even[:n] = 1.0 / n
    return even.view(1, -1, 1).expand(len(present), -1, positions)


class DomainWeights(nn.Module, abc.ABC):
    """How fusion weighs the domains: (B, S + 1, P) weights of each source domain and of the
    target (last) at each of P positions, from the domains' interests ``sources`` (B, S, D)
    and ``target`` (B, P, D), ``present`` (B, S + 1: whether the user has history in each
    domain) and ``counts`` (B, S + P: history lengths in each source domain, then in the
    target at each position). A subclass gives :meth:`source_logits` (softmax weights
    against the target's logit 0) or overrides :meth:`forward`."""

    def source_logits(self, sources, target, counts) -> torch.Tensor:
        """(B, S, P) logit of each source domain against the target's (0)."""
        raise NotImplementedError

    def forward(self, sources, target, present, counts) -> torch.Tensor:
        n, positions = sources.shape[1], target.shape[1]
        nothing = ~present.any(1).view(-1, 1, 1)
        logits = self.source_logits(sources, target, counts)
        logits = torch.where(present[:, :n].unsqueeze(-1), logits, MASKED)
        target_logit = torch.where(present[:, n:], 0.0, MASKED).unsqueeze(-1)
        target_logit = target_logit.expand(-1, 1, positions)
        # w_d = softmax over [logit_1..logit_S, target] written as sigmoid(logit_d - logsumexp
        # (the other logits)): with one source domain that is the two-domain rule
        # sigmoid(logit) exactly.
        source_w = []
        for d in range(n):
            others = torch.cat([logits[:, :d], logits[:, d + 1 :], target_logit], dim=1)
            source_w.append(torch.sigmoid(logits[:, d] - torch.logsumexp(others, dim=1)))
        w = torch.stack(source_w, 1)
        # The target's weight is the rest, and exactly 0 without target history (the sources'
        # sigmoids may then sum to 1 - 1 ulp).
        rest = torch.where(present[:, n:].unsqueeze(-1), 1 - w.sum(1, keepdim=True), 0.0)
        w = torch.cat([w, rest], dim=1)
        return torch.where(nothing, even_weights(present, positions), w)

    def global_weights(self) -> torch.Tensor | None:
        """(S + 1,) the weights of a user with history in every domain when they are the same
        for every user (for ``metrics.json``); None when they are per user."""
        return None


class FixedWeights(DomainWeights):
    """Constants: alpha_d on the source domains the user has history in; the target takes the
    rest (1 - a, as the two-domain rule), and a user without target history splits everything
    over their source domains by alpha (evenly when those alphas are 0)."""

    def __init__(self, alphas: list[float]):
        super().__init__()
        self.register_buffer("alphas", torch.tensor(alphas), persistent=False)

    def fixed(self, present: torch.Tensor) -> torch.Tensor:
        """(B, S + 1, 1) the weights of users with history ``present`` (B, S + 1)."""
        n = present.shape[1] - 1
        source = self.alphas.view(1, n) * present[:, :n]
        total = source.sum(1, keepdim=True)
        cold = torch.where(
            total > 0,
            source / total.clamp_min(1e-30),
            present[:, :n] / present[:, :n].sum(1, keepdim=True).clamp_min(1),
        )
        has_target = present[:, n:]
        source = torch.where(has_target, source, cold)
        rest = torch.where(has_target, 1 - source.sum(1, keepdim=True), 0.0)
        return torch.cat([source, rest], dim=1).unsqueeze(-1)

    def forward(self, sources, target, present, counts) -> torch.Tensor:
        positions = target.shape[1]
        nothing = ~present.any(1).view(-1, 1, 1)
        fixed = self.fixed(present).expand(-1, -1, positions)
        return torch.where(nothing, even_weights(present, positions), fixed)

    def global_weights(self) -> torch.Tensor:
        return self.fixed(torch.ones(1, len(self.alphas) + 1, dtype=torch.bool)).flatten()


class LearnedWeights(DomainWeights):
    """Global weights: a softmax over one logit per source domain and the target's (fixed at
    0), learned with the model and started at ``alphas``."""

    def __init__(self, alphas: list[float]):
        super().__init__()
        self.logit = nn.Parameter(start_logits(alphas))

    def source_logits(self, sources, target, counts) -> torch.Tensor:
        batch, n, positions = sources.shape[0], sources.shape[1], target.shape[1]
        return self.logit.view(1, n, 1).expand(batch, n, positions)

    def global_weights(self) -> torch.Tensor:
        return torch.softmax(torch.cat([self.logit.detach(), self.logit.new_zeros(1)]), 0)


class GatedWeights(DomainWeights):
    """Per user: logit_d = w . [F_td; F_tT] + b, so users whose histories agree can lean on a
    source domain more than users whose tastes differ; with ``context`` the logit also sees
    which domain it is (a learned bias per domain) and how much history the user has in it and
    in the target (log(1 + count), learned slopes)."""

    def __init__(self, dim: int, domains: int, context: bool = False):
        super().__init__()
        self.gate = nn.Linear(2 * dim, 1)
        self.context = context
        if context:  # zeros: the gate starts as the plain one
            self.domain_bias = nn.Parameter(torch.zeros(domains))
            self.history_slopes = nn.Parameter(torch.zeros(2))

    def source_logits(self, sources, target, counts) -> torch.Tensor:
        n, positions = sources.shape[1], target.shape[1]
        pair = torch.cat(
            [
                sources.unsqueeze(2).expand(-1, -1, positions, -1),
                target.unsqueeze(1).expand(-1, n, -1, -1),
            ],
            dim=-1,
        )
        logits = self.gate(pair).squeeze(-1)
        if self.context:
            lengths = torch.log1p(counts.to(logits.dtype))
            source_part = self.domain_bias.view(1, n) + self.history_slopes[0] * lengths[:, :n]
            target_part = self.history_slopes[1] * lengths[:, n:]
            logits = logits + source_part.unsqueeze(-1) - target_part.unsqueeze(1)
        return logits


LEGACY_KEYS = ("logit", "gate.weight", "gate.bias", "domain_bias", "history_slopes")
"""Weighting parameters that checkpoints made before the weighting was a component hold at
the strategy's top level (now under ``weighting.``)."""


class DomainFusion(TransferStrategy):
    """Base of the fusion strategies: one tower, a :class:`DomainWeights` component (see the
    module docstring). A subclass passes ``weighting``, called once after the tower is built
    (so the tower's initial weights come first from the seeded random stream)."""

    streams = ("source", "target")
    reads = frozenset({"source_hist", "target_hist"})
    objectives = ("ranking", "rating")

    def __init__(
        self,
        context: StrategyContext,
        weighting: Callable[[], DomainWeights],
        set_weight: float,
    ):
        super().__init__(context)
        self.streams = set_weight_streams(self.streams, set_weight)
        self.set_weight = set_weight
        self.names = context.source_names
        self.domains = (*self.names, "target")  # weight columns: source domains, then target
        self.tower = Tower(context)
        self.weighting = weighting()
        self.bos = context.bos

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in LEGACY_KEYS:
            if prefix + key in state_dict:
                state_dict[f"{prefix}weighting.{key}"] = state_dict.pop(prefix + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fuse(
        self,
        source_hist: torch.Tensor,
        table: torch.Tensor,
        target: torch.Tensor,
        target_present: torch.Tensor,
        target_counts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused interest (B, P, D) and the weights (B, S + 1, P). ``target`` (B, P, D):
        the target-side interest at each fused position; ``target_present`` (B,) whether the
        user has target history, ``target_counts`` (B, P) how much at each position."""
        histories = self.source_histories(source_hist)
        # One user-model pass over every domain's histories (S x B rows) -> (B, S, D).
        batch, n = len(source_hist), len(histories)
        sources = self.tower.interest(torch.cat(histories), table)
        sources = sources.view(n, batch, -1).transpose(0, 1)
        source_counts = torch.stack([item_count(h, self.bos) for h in histories], 1)
        present = torch.cat([source_counts > 0, target_present.unsqueeze(1)], 1)
        counts = torch.cat([source_counts, target_counts], 1)
        w = self.weighting(sources, target, present, counts)
        fused = (w[:, :n].unsqueeze(-1) * sources.unsqueeze(2)).sum(1)
        return fused + w[:, n].unsqueeze(-1) * target, w

    def training_loss(self, batch: TrainBatch) -> dict[str, torch.Tensor]:
        source_loss = self.stream_loss(self.tower, batch, "source", self.source_catalog)
        target_loss = self.fused_window_loss(self.rows(batch, "target"))
        losses = {
            "loss": source_loss + target_loss,
            "loss_source": source_loss,
            "loss_target": target_loss,
        }
        return self.with_set_loss(losses, self.set_weight, self.tower, batch, self.cold_interest)

    def fused_window_loss(self, part: TrainBatch) -> torch.Tensor:
        """The objective on the target windows with the fused interest at every position (0
        for a batch of source windows only: nothing to fuse)."""
        if len(part.user) == 0:
            return part.tokens.new_zeros((), dtype=torch.float)
        table = self.tower.table(part.labels)
        target = self.tower.interests(part.tokens, table)
        # Every target window fuses at every position (a user with target training data),
        # counting the target items seen up to each position.
        seen = torch.cumsum(is_item(part.tokens, self.bos).long(), dim=1)
        present = torch.ones_like(part.user, dtype=torch.bool)
        fused, _ = self.fuse(part.source_hist, table, target, present, seen)
        return self.objective.window_loss(fused, part, table, self.target_catalog)

    def cold_interest(self, pairs: TrainBatch, table: torch.Tensor) -> torch.Tensor:
        """The fused interest of a user with no target history: their source domains alone."""
        n, dim = len(pairs.user), table.shape[1]
        none = torch.zeros(n, dtype=torch.bool, device=table.device)
        target = table.new_zeros(n, 1, dim)
        counts = torch.zeros(n, 1, dtype=torch.long, device=table.device)
        return self.fuse(pairs.source_hist, table, target, none, counts)[0].squeeze(1)

    def _scored(self, batch: UserBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) fused interests and (B, S + 1) weights of an evaluation batch."""
        table = self.tower.table(None)
        target_hist = batch.target_hist
        target = self.tower.interest(target_hist, table).unsqueeze(1)
        present = has_items(target_hist, self.bos)
        counts = item_count(target_hist, self.bos).unsqueeze(1)
        fused, w = self.fuse(batch.source_hist, table, target, present, counts)
        return fused.squeeze(1), w.squeeze(-1)

    def target_interest(self, batch: UserBatch) -> torch.Tensor:
        return self._scored(batch)[0]

    def target_items(self) -> torch.Tensor:
        return self.tower.table(None)[self.target_catalog]

    def transfer_weights(self, batch: UserBatch) -> dict[str, torch.Tensor]:
        return self.named_weights(self._scored(batch)[1])

    def scores_and_weights(self, batch: UserBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fused, w = self._scored(batch)  # one fused forward pass for both
        return self.interest_scores(fused), self.named_weights(w)

    def named_weights(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, S + 1) weights as ``weight/<domain>`` -> (B,), the target last."""
        return {f"weight/{name}": w[:, i] for i, name in enumerate(self.domains)}

    def transfer_summary(self) -> dict[str, float]:
        """The global weights of a weighting that has them (for a user with history in every
        domain); a gate's weights are per user (``transfer_weights``)."""
        w = self.weighting.global_weights()
        if w is None:
            return {}
        return {f"fusion/weight/{name}": float(w[i]) for i, name in enumerate(self.domains)}
