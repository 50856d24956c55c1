"""EASE (Steck, WWW 2019): a closed-form item-item linear model over both domains.

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
import scipy.linalg
import scipy.sparse as sp
import torch

from recmig import sparse_ridge
from recmig.closed_form import ClosedFormStrategy
from recmig.data.tensors import TrainingMatrix
from recmig.strategy import StrategyContext

BLOCK_BYTES = 2**28
"""Size of a dense column block computed at once: of X^T X (the sparse product of a whole
catalogue can hold far more entries than the dense result) and of B."""


def gram_matrix(x: sp.csr_matrix) -> np.ndarray:
    """X^T X as a dense float32 (N, N) array, computed in column blocks."""
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float32)
    xt, xc = x.T.tocsr(), x.tocsc()
    block = max(1, BLOCK_BYTES // (4 * n))
    for start in range(0, n, block):
        gram[:, start : start + block] = (xt @ xc[:, start : start + block]).toarray()
    return gram


def inverse_lower(gram: np.ndarray, lam: float) -> np.ndarray:
    """(X^T X + lambda I)^-1 in place of ``gram``, lower triangle only (LAPACK potrf/potri):
    P[i, j] = result[max(i, j), min(i, j)]."""
    gram[np.diag_indices_from(gram)] += lam
    # LAPACK works in Fortran order; the transpose of the symmetric C-ordered Gram matrix is
    # the same matrix in Fortran order, so no copy is made.
    factor, _ = scipy.linalg.cho_factor(gram.T, lower=True, overwrite_a=True, check_finite=False)
    (potri,) = scipy.linalg.get_lapack_funcs(("potri",), (factor,))
    inverse, info = potri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverting X^T X + lambda I failed (LAPACK info {info})")
    return inverse


def ease_weights(
    gram: np.ndarray, lam: float, columns: np.ndarray, prior: np.ndarray | None = None
) -> np.ndarray:
    """Columns ``columns`` of EASE's B from the Gram matrix X^T X, shape (N, len(columns)).

    ``gram`` is overwritten: the Cholesky factor and then the inverse are computed in place
    (LAPACK potrf/potri), so the peak is one N x N matrix (two with a ``prior``).

    ``prior`` (N, len(columns)): regularise toward B0 instead of toward zero,
    argmin ||X - X B||^2 + lambda ||B - B0||^2 s.t. diag(B) = 0, whose columns are (Lagrange,
    as EASE's own derivation, with P = (X^T X + lambda I)^-1)

        B[:, j] = B_ease[:, j] + lambda ((P B0)[:, j] - P[:, j] (P B0)[j, j] / P[j, j])

    An item with many interactions follows them. An item with none (a zero Gram column) has no
    data term at all: its zero column is unobserved, not evidence against it (the formula
    would shrink B0 by lambda P as if every user had declined it), so its column is B0's.
    """
    unseen = np.diagonal(gram)[columns] == 0 if prior is not None else None
    inverse = inverse_lower(gram, lam)
    smoothed = None
    if prior is not None:
        full = np.tril(inverse)
        full += np.tril(inverse, -1).T
        smoothed = full @ prior.astype(full.dtype)  # P B0
        del full
    # potri fills the lower triangle: P[i, j] = inverse[max(i, j), min(i, j)]. Columns are
    # read in blocks, so the peak stays one N x N matrix plus the (N, C) result.
    n = len(inverse)
    weights = np.empty((n, len(columns)), dtype=np.float32)
    rows = np.arange(n)[:, None]
    block = max(1, BLOCK_BYTES // (4 * n))
    for start in range(0, len(columns), block):
        cols = columns[start : start + block]
        p = np.where(rows >= cols[None, :], inverse[:, cols], inverse[cols, :].T)
        weights[:, start : start + block] = -p / np.diagonal(inverse)[cols]
        if smoothed is not None:
            part = smoothed[:, start : start + block]
            own = part[cols, np.arange(len(cols))]  # (P B0)[j, j]
            weights[:, start : start + block] += lam * (
                part - p * (own / np.diagonal(inverse)[cols])
            )
    if unseen is not None:
        weights[:, unseen] = prior[:, unseen]
    weights[columns, np.arange(len(columns))] = 0.0
    return weights


class EASE(ClosedFormStrategy):
    description = "baseline: EASE closed-form item-item model on both domains' training matrix"
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
        side information (:mod:`.text_ease`)."""
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

    def target_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.solver == "exact":
            return self.multiply(batch["inputs"], self.weights)
        return self.sparse_scores("neighbour", batch["inputs"])
