"""EASE with the language model inside: items that read alike share weights.

Collective EASE (Ning and Karypis' SSLIM idea in EASE's closed form; Jeunen et al. 2020):
the item text embeddings t_i (the item encoder's frozen language-model features, centred and
standardised, rows scaled to unit length) join the training matrix as extra rows,

    X' = [X ; sqrt(w s) T^T]   =>   G = X^T X + w s T T^T,   s = mean_i (X^T X)_ii

so B must also rebuild each item's text from the other items' text, and then EASE as usual:
P = (G + lambda I)^-1, B = I - P diag(1 / diag(P)), score(u, i) = x_u B[:, i]. ``w`` is the
text's weight relative to an average item's interaction count. Where interactions are many
they dominate; where they are few (a rare item, a cross-domain pair seen by few warm users)
text similarity fills in, which is what knowledge shared through item text means here.
"""

from __future__ import annotations

import numpy as np

from recmig.data.tensors import TrainingMatrix
from recmig.ease import EASEModel
from recmig.linear import item_text
from recmig.strategy import StrategyContext


class TextEASE(EASEModel):
    description = "EASE whose Gram matrix adds item text similarity from the language model"
    config_name = "text_ease"
    approximable = False  # the text term fills the Gram matrix densely

    def __init__(
        self,
        context: StrategyContext,
        lam: float = 3000.0,
        text_weight: float = 1.0,
        max_items: int = 20000,
    ):
        super().__init__(context, lam=lam, max_items=max_items)
        if text_weight < 0:
            raise ValueError(f"strategy.text_weight must be >= 0, got {text_weight}")
        self.text_weight = text_weight

    def gram(self, matrix: TrainingMatrix) -> np.ndarray:
        gram = super().gram(matrix)
        if self.text_weight > 0:
            text = item_text(self.context, "text_ease")
            scale = self.text_weight * float(np.mean(np.diagonal(gram)))
            gram += (scale * text) @ text.T
        return gram
