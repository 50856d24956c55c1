"""The language model as a prior: the ridge map and EASE regularised toward text, not toward 0.

Interaction models know nothing of an item nobody has interacted with, and little of a rare
one. Here the language model supplies a dense prior B0 over every (item, target item) pair, and
both closed-form paths of ``ridge_map`` shrink toward it instead of toward zero:

1. *Text mapped into the collaborative space.* EASE on all training interactions gives every
   item j with interactions (any domain) a column B[:, j] of weights from every item. A ridge
   regression from an item's language-model vector t_j (unit length) to its column,

       A = argmin_A sum_{j known} ||B[:, j] - A t_j||^2 + rho ||A||^2
         = B_K T_K (T_K^T T_K + rho I)^-1        (N, d), rho = ``text_lam`` tr(T_K^T T_K) / d

   says which items predict an item that reads like t. Applied to every target item,

       B0 = alpha A T_t^T          (N, N_t), alpha = ``prior_weight``

   is in the units of the data's own weights (so alpha = 1 is calibrated), and reaches items
   without interactions and, when the target has none at all, a whole domain: then A is
   learnt from the source domain's columns alone.
2. *Warm users:* EASE toward B0, argmin ||X - X B||^2 + lambda ||B - B0||^2, diag(B) = 0
   (closed form in :func:`.ease.ease_weights`).
3. *Cold users:* the ridge map (on the source history densified by source-side EASE,
   D = I + delta B_ss, as ``ridge_transfer`` without its text neighbours; ``densify`` = 0:
   D = I) toward a prior M0 of its own: the same text regression fit on the plain map's
   columns of the target items it has seen (its weights are in units of their own),

       M = argmin ||X_T - X_S D M||^2 + mu ||M - M0||^2
         = (D^T X_S^T X_S D + mu I)^-1 (D^T X_S^T X_T + mu M0).

A target item with many interactions follows its data. An item nobody has in training has no
data term (its zero column is unobserved, not evidence against it): its column is the prior's.
On a target platform with no interactions at all (zero-shot) M0 comes from B0's source rows,
and text alone carries the user's source interests. ``prior_weight = 0`` is exactly
``ridge_map`` (``densify`` = 0) or ``ridge_transfer`` without text (``densify`` > 0,
``text_weight`` = 0): the ablation that measures the language model.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from recmig.data.tensors import TrainingMatrix
from recmig.item_map import ItemMapTransfer
from recmig.linear import ease_weights, gram_matrix, item_text
from recmig.strategy import StrategyContext


def text_to_columns(columns: np.ndarray, text: np.ndarray, text_lam: float) -> np.ndarray:
    """(N, d) A of the module docstring from (N, K) known ``columns`` and their (K, d) ``text``."""
    # An intercept (its own, unpenalised feature): the mean column, what an item of average
    # text gets; the text vectors are centred, so without it every prediction shrinks to 0.
    t = np.hstack([text.astype(np.float64), np.ones((len(text), 1))])
    gram = t.T @ t
    penalty = np.full(len(gram), text_lam * np.trace(gram[:-1, :-1]) / (len(gram) - 1))
    penalty[-1] = 0.0
    gram[np.diag_indices_from(gram)] += penalty
    return scipy.linalg.solve(gram, t.T @ columns.T.astype(np.float64), assume_a="pos").T


class TextPrior(ItemMapTransfer):
    description = "ridge map (cold) and EASE (warm) regularised toward the language model's prior"
    releases_source = False  # the prior reads every user's raw source rows
    config_name = "text_prior"
    approximable = False  # the prior B0 is dense

    def __init__(
        self,
        context: StrategyContext,
        lam: float = 4000.0,
        map_lam: float = 300.0,
        densify: float = 0.0,
        source_lam: float = 1000.0,
        prior_weight: float = 1.0,
        text_lam: float = 1.0,
        max_items: int = 20000,
    ):
        # Text enters through the prior only (no text neighbours in the densifier), so
        # prior_weight = 0 is the same model without the language model.
        super().__init__(
            context,
            lam=lam,
            map_lam=map_lam,
            densify=densify,
            source_lam=source_lam,
            text_weight=0.0,
            max_items=max_items,
        )
        if prior_weight < 0:
            raise ValueError(
                f"strategy.prior_weight must be >= 0 (0: no text, ridge_map), got {prior_weight}"
            )
        if text_lam <= 0:
            raise ValueError(f"strategy.text_lam must be > 0, got {text_lam}")
        self.prior_weight, self.text_lam = float(prior_weight), float(text_lam)

    def text_columns(self, columns: np.ndarray, known: np.ndarray) -> np.ndarray:
        """alpha A T_t^T: every target item's column predicted from its text by the ridge
        regression fit on ``columns`` (R, K) of the items ``known`` (K,) (column indices)."""
        text = item_text(self.context, "text_prior")
        a = text_to_columns(columns, text[known], self.text_lam)
        target = text[self.target_columns()].astype(np.float64)
        return (self.prior_weight * (a[:, :-1] @ target.T + a[:, -1:])).astype(np.float32)

    def warm_prior(self, matrix: TrainingMatrix) -> np.ndarray | None:
        """B0 from EASE's columns of every item with interactions (both domains)."""
        if self.prior_weight == 0:
            return None
        x = self.item_matrix(matrix)
        known = np.flatnonzero(x.getnnz(axis=0) > 0)
        return self.text_columns(ease_weights(gram_matrix(x), self.warm.lam, known), known)

    def cold_prior(self, fitted, seen, warm_source_rows) -> np.ndarray | None:
        """M0 from the plain map's own columns of the target items it has seen (the cold map's
        weights are in units of their own); with none at all (zero-shot), the warm prior's
        source rows (from EASE's columns of the source items: which source items go with which
        text), computed once for both paths."""
        if self.prior_weight == 0:
            return None
        if seen.any():
            return self.text_columns(fitted[:, seen], self.target_columns()[seen])
        return warm_source_rows
