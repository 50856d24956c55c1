"""EASE (Steck, WWW 2019): a closed-form item-item linear model over both domains.

The model of the ``ease`` strategy, shared by the strategies built on it (``text_ease`` adds
item text to its Gram matrix, ``ridge_transfer`` scores warm users with it).

    P = (X^T X + lambda I)^-1,   B = I - P diag(1 / diag(P))   (so diag(B) = 0)
    score(u, i) = x_u B[:, i]     for target items i

X is the binary user x item training matrix of source and target items concatenated, so the
weights from a user's source items to target items are learnt from warm users who have both:
a cold user's score comes from their source history alone. B minimises
||X - X B||^2 + lambda ||B||^2 subject to diag(B) = 0.

The exact solver inverts a dense (items x items) Gram matrix, so its memory grows with the square
of the catalogue. Above ``max_items`` the default solver (``auto``) switches to the neighbourhood
solver of :mod:`recmig.sparse_ridge` (each column a ridge regression on its ``neighbours`` most
co-occurring items; memory grows with the interactions), and ``solver: exact`` refuses before
allocating anything.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from recmig import sparse_ridge
from recmig.batches import UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.tensors import TrainingMatrix
from recmig.linear import ease_weights, gram_matrix
from recmig.strategy import StrategyContext


class EASEModel(ClosedFormStrategy):
    """EASE's fit and scores (see the module docstring); a strategy subclasses it."""

    config_name: ClassVar[str] = "ease"  # how users name it, in error messages
    approximable: ClassVar[bool] = True  # whether the neighbourhood solver fits its model

    def __init__(
        self,
        context: StrategyContext,
        lam: float = 3000.0,
        max_items: int = 20000,
        solver: str = "auto",
        neighbours: int = 200,
    ):
        super().__init__(context)
        if lam <= 0:
            raise ValueError(f"strategy.lam must be > 0 (the L2 weight of EASE), got {lam}")
        outputs = len(context.target_catalog)
        self.solver = sparse_ridge.solver_for(
            self.config_name,
            solver,
            context.vocab_size - 2,
            max_items,
            outputs,
            neighbours,
            self.approximable,
        )
        self.lam, self.neighbours = lam, int(neighbours)
        if self.solver == "exact":
            self.register_fitted("weights")  # (vocab_size, N_t)
        else:
            self.register_sparse("neighbour")

    def gram(self, matrix: TrainingMatrix) -> np.ndarray:
        """The (N, N) float32 matrix EASE inverts (before lambda): X^T X. Subclasses may add
        side information (``text_ease``)."""
        return gram_matrix(self.item_matrix(matrix))

    def fit(self, matrix: TrainingMatrix, prior: np.ndarray | None = None) -> None:
        """``prior``: (N, N_t) B0 to regularise the target columns toward (see ease_weights;
        the exact solver only)."""
        if self.solver == "exact":
            weights = ease_weights(self.gram(matrix), self.lam, self.target_columns(), prior)
            self.weights = self.token_rows(torch.from_numpy(weights))
            return
        if prior is not None:
            raise ValueError("EASE's neighbourhood solver has no prior; use strategy.solver=exact")
        x = self.item_matrix(matrix)
        columns = self.target_columns()
        gram = sparse_ridge.neighbourhood_gram(
            x,
            len(columns),
            self.neighbours,
            f"strategy={self.config_name} with solver=neighbourhood on {x.shape[1]:,} items",
        )
        index, weights = sparse_ridge.neighbourhood_ridge(
            gram, gram[:, columns], self.lam, self.neighbours, exclude=columns
        )
        self.set_sparse("neighbour", index, weights)

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        if self.solver == "exact":
            return self.multiply(batch.inputs, self.weights)
        return self.sparse_scores("neighbour", batch.inputs)
