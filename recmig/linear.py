"""Closed-form math shared by the linear strategies: the Gram matrix, EASE's weights, and the
language model's item text as unit vectors and as neighbour weights.

EASE (Steck, WWW 2019): ``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag(P))``. The
strategies (``ease``, ``text_ease``, ``ridge_transfer``, ``text_prior``, ``content_knn``)
import these from here rather than from one another, so each plugin depends on ``recmig`` only
for its math.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch

from recmig.encoders.item import SupportsTextFeatures
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


def item_text(context: StrategyContext, strategy: str) -> np.ndarray:
    """(N, d) text features of items 1..N from the run's item encoder (its frozen language-model
    output), centred and scaled to unit length: dot products are cosine similarities."""
    encoder = context.make_item_encoder()
    if not isinstance(encoder, SupportsTextFeatures):
        raise ValueError(
            f"strategy={strategy} reads item text features, but the item encoder "
            f"{type(encoder).__name__} has none (no text_features()); use encoder=text"
        )
    features = encoder.text_features().detach().to(torch.float32).cpu().numpy()
    features = features - features.mean(0)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def text_neighbours(text: np.ndarray, k: int) -> np.ndarray:
    """(N, N) row-normalised similarity to each item's ``k`` most similar other items (cosine
    of unit-length ``text`` rows; negative similarities dropped)."""
    sim = text @ text.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, len(text) - 1)
    keep = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    out = np.zeros_like(sim)
    np.put_along_axis(out, keep, np.maximum(np.take_along_axis(sim, keep, axis=1), 0.0), axis=1)
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
