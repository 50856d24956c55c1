"""Feature averaging: mix a user's source and target interests with a fixed weight.

    u_T = a * f(history_S(u)) + (1 - a) * f(history_T(u))

One shared item encoder and user model serve both domains (next-item losses on the source and
on the target stream), so both interests live in one space; with a text encoder that space is
the language model's, which is what lets a film history say something about books. A cold user
has no target history and gets the source side alone (a = 1); a user without source history
gets the target side alone (a = 0); ``set_weight`` trains the cold side on the cold-start
question (:mod:`recmig.fusion`): fusion with :class:`~recmig.fusion.FixedWeights`.
"""

from __future__ import annotations

from functools import partial

from recmig.fusion import DomainFusion, FixedWeights, source_alphas
from recmig.strategy import StrategyContext


class FeatureAveraging(DomainFusion):
    description = (
        "u_T = a * source interest + (1 - a) * target interest, shared encoder (set_weight: "
        "plus the cold-start question as a loss)"
    )

    def __init__(self, context: StrategyContext, alpha: float = 0.5, set_weight: float = 0.0):
        alphas = source_alphas(alpha, context.source_names)
        super().__init__(context, partial(FixedWeights, alphas), set_weight)
