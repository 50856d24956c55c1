"""EASE (Steck, WWW 2019): a closed-form item-item linear model over both domains.

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P))   (so diag(B) = 0)
    score(u, i) = x_u B[:, i]     for target items i

X holds the training interactions of source and target items, so a cold user's score comes
from their source history alone. The model, its solvers (exact, or the neighbourhood solver
above ``max_items``) and its options are :class:`recmig.ease.EASEModel`'s.
"""

from __future__ import annotations

from recmig.ease import EASEModel


class EASE(EASEModel):
    description = "baseline: EASE closed-form item-item model on both domains' training matrix"
