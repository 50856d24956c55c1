"""Domain-weighted fusion of a user's interests read from each domain.

    F_t = sum_d w_d F_td + w_T F_tT,      sum_d w_d + w_T = 1

F_td = f(history_d(u)) is the interest read from source domain d, F_tT = f(history_T(u)) the
one read from the target domain; one item encoder and user model serve every domain, so all
live in one space (with a text encoder, the language model's). With one source domain this is
F_t = a F_tA + (1 - a) F_tB. The source weights w_d are
a component of :mod:`recmig.fusion` chosen by ``mode``:

- ``fixed``: constants, ``alpha`` (one weight per source domain, or one number: the total
  source weight, split equally) and w_T = 1 - sum(alpha) (this is feature averaging,
  :mod:`.feature_averaging`);
- ``learned``: global weights, a softmax over one logit per source domain and the target's
  (fixed at 0), learned with the model and started at ``alpha``;
- ``gate``: per user, logit_d = w . [F_td; F_tT] + b, so users whose histories agree can lean
  on a source domain more than users whose tastes differ; with ``gate_context`` the logit also
  sees which domain it is (a learned bias per domain) and how much history the user has in it
  and in the target (log(1 + count), learned slopes).

A domain in which the user has no history gets weight 0 and its share goes to the others: a
cold-start user is fused from their source domains alone. Trained with next-item losses on the
merged source stream and on the target stream (the fused interest at every position of the
target window; :class:`recmig.fusion.DomainFusion`). ``set_weight`` > 0
adds the cold-start question on warm overlapping users, as ``pooled`` does:

    L = L_source + L_target + w * ( - mean_{i in T(u)} log softmax_i( F_t(u | no target) . E_T ) )

with F_t(u | no target) the fusion of the user's source domains alone (what a cold user gets).
"""

from __future__ import annotations

from functools import partial

from recmig.fusion import (
    DomainFusion,
    FixedWeights,
    GatedWeights,
    LearnedWeights,
    source_alphas,
)
from recmig.strategy import StrategyContext

MODES = ("fixed", "learned", "gate")


class Fusion(DomainFusion):
    description = (
        "F_t = sum_d w_d F_td + w_T F_tT over source domains d; w fixed/learned/gated "
        "(set_weight: plus the cold-start question as a loss)"
    )

    def __init__(
        self,
        context: StrategyContext,
        mode: str = "gate",
        alpha: float | list[float] = 0.5,
        gate_context: bool = False,
        set_weight: float = 0.0,
    ):
        if mode not in MODES:
            raise ValueError(f"strategy.mode must be one of {MODES}, got {mode!r}")
        alphas = source_alphas(alpha, context.source_names)
        weighting = {
            "fixed": partial(FixedWeights, alphas),
            "learned": partial(LearnedWeights, alphas),
            "gate": partial(GatedWeights, context.dim, len(alphas), gate_context),
        }[mode]
        super().__init__(context, weighting, set_weight)
