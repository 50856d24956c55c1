"""Ridge regressions on each output's strongest co-occurring inputs: closed-form item models
past the dense limit.

EASE and the ridge maps solve, for every output column j, one ridge regression over all N
input columns of a binary interaction matrix F,

    w_j = argmin_w ||y_j - F w||^2 + lambda ||w||^2 = (G + lambda I)^-1 F^T y_j,   G = F^T F

through a dense N x N inverse: memory grows with the square of the catalogue (about 1.6 GB of
float32 at 20k items, 40 GB at 100k). EASE is the case F = Y = X with item j left out of its
own regression (its constraint diag(B) = 0 makes the columns independent regressions of x_j on
every other item).

The neighbourhood solver keeps each regression exact but restricts it to the ``k`` inputs
N_j that co-occur most with output j (largest (F^T y_j)_i; ties broken toward the less
popular input, the more specific evidence):

    w_j[N_j] = (G[N_j, N_j] + lambda I)^-1 (F^T y_j)[N_j],    w_j = 0 outside N_j

Steck's sparse approximation of EASE (Markov random fields for collaborative filtering,
NeurIPS 2019) and feature-selected SLIM (Ning & Karypis, RecSys 2011) restrict the same way.
An input that never co-occurs with j gets no weight (in the exact solution it can get a small
one through chains of co-occurrence); with N_j = every co-occurring input the solution differs
from the exact one only by those. Memory: the sparse Gram matrix (at most sum_u n_u^2 nonzeros,
n_u a user's interaction count) and k weights per output; time: one k x k solve per output.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import scipy.sparse as sp
import torch

log = logging.getLogger(__name__)

CHUNK = 512
"""Outputs solved together: their k x k systems are stacked into one batched LAPACK call."""


SOLVERS = ("auto", "exact", "neighbourhood")

LAPACK_INDEX_LIMIT = 2**31
"""Entries of the largest dense matrix the exact solver factorises: scipy's LAPACK indexes
with 32-bit integers (exact EASE at 50,000 items crashed inside OpenBLAS)."""


def solver_for(
    strategy: str,
    solver: str,
    items: int,
    max_items: int,
    outputs: int,
    neighbours: int,
    approximable: bool = True,
) -> str:
    """The solver a closed-form strategy uses on ``items`` items (``solver`` as configured):
    ``exact`` up to ``max_items``, ``neighbourhood`` above under ``auto``; a one-line refusal
    naming the options when the configuration cannot work, before anything is allocated.
    ``approximable``: whether the strategy's model has a neighbourhood solver at all."""
    if solver not in SOLVERS:
        raise ValueError(f"strategy.solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if neighbours < 1:
        raise ValueError(
            f"strategy.neighbours must be >= 1 (inputs per column of the neighbourhood solver), "
            f"got {neighbours}"
        )
    if solver == "auto":
        fits = items <= max_items and items * items < LAPACK_INDEX_LIMIT
        solver = "exact" if fits or not approximable else "neighbourhood"
        if solver == "neighbourhood":
            log.info(
                "strategy=%s: %d items (strategy.max_items=%d), so the neighbourhood solver "
                "(strategy.neighbours=%d) instead of the exact one",
                strategy,
                items,
                max_items,
                neighbours,
            )
    if solver == "neighbourhood" and not approximable:
        raise ValueError(
            f"strategy={strategy} has dense terms (text, a densifier or a privacy release) that "
            "the neighbourhood solver cannot keep sparse: use strategy.solver=exact, or "
            "strategy=ease / strategy=ridge_map on catalogues above the exact solver's limit"
        )
    if solver == "exact" and items * items >= LAPACK_INDEX_LIMIT:
        raise ValueError(
            f"strategy={strategy}: the exact solver cannot take {items:,} items: its dense "
            f"Gram matrix would have {items * items:,} entries, and the LAPACK in scipy's "
            "wheels indexes a matrix with 32-bit integers (at 50,000 items it crashed with a "
            "segmentation fault). Use strategy.solver=neighbourhood"
            + ("" if approximable else " with strategy=ease or strategy=ridge_map")
        )
    if solver == "exact" and items > max_items:
        dense = _size(items * items * 4)
        alternative = (
            f"Use strategy.solver=neighbourhood (weights about {_size(12 * outputs * neighbours)} "
            f"at strategy.neighbours={neighbours}, plus the sparse Gram matrix, which grows "
            "with the interactions), or raise"
            if approximable
            else "strategy=ease and strategy=ridge_map have a neighbourhood solver for larger "
            "catalogues; or raise"
        )
        raise ValueError(
            f"strategy={strategy}: the catalogue has {items:,} items (both domains) but "
            f"strategy.max_items={max_items:,}; the exact solver inverts a dense {items:,} x "
            f"{items:,} float32 Gram matrix (about {dense}). {alternative} strategy.max_items "
            "if the memory is there"
        )
    return solver


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def gram_nonzeros_bound(x: sp.csr_matrix) -> int:
    """At most how many nonzeros X^T X has: sum over users of (row count)^2, capped at N^2."""
    counts = np.diff(x.indptr).astype(np.int64)
    return int(min(np.square(counts).sum(), x.shape[1] ** 2))


def available_memory() -> int:
    """Bytes the machine can still give this process (MemAvailable; total memory elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def neighbourhood_bytes(x: sp.csr_matrix, outputs: int, neighbours: int) -> int:
    """Peak bytes of :func:`neighbourhood_ridge` on X: the sparse Gram matrix (float32 values
    and int32 indices; scipy's product holds it twice while it builds it), the weights and
    one chunk of stacked float64 systems."""
    gram = 2 * 8 * gram_nonzeros_bound(x)
    return gram + 12 * outputs * neighbours + 8 * CHUNK * neighbours * (neighbours + 1)


def check_memory(needed: int, what: str) -> None:
    """Refuse before allocating when ``needed`` bytes exceed what the machine has available."""
    free = available_memory()
    if needed > free:
        raise ValueError(
            f"{what} needs about {_size(needed)} (the sparse Gram matrix grows with the square "
            f"of each user's interaction count) but the machine has {_size(free)} available; "
            "keep a share of the interactions (data.scenario.interaction_fraction) or use a "
            "machine with more memory"
        )


def sparse_gram(x: sp.csr_matrix) -> sp.csr_matrix:
    """X^T X as a sparse float32 matrix with sorted indices."""
    x = x.astype(np.float32)
    gram = (x.T.tocsr() @ x).tocsr()
    gram.sort_indices()
    return gram


def neighbourhood_gram(x: sp.csr_matrix, outputs: int, neighbours: int, what: str):
    """:func:`sparse_gram` of X for :func:`neighbourhood_ridge` with ``outputs`` columns,
    after refusing (naming ``what``) when the solve would not fit in the memory available."""
    check_memory(neighbourhood_bytes(x, outputs, neighbours), what)
    return sparse_gram(x)


def strongest_inputs(
    cross: sp.csc_matrix, column: int, neighbours: int, popularity: np.ndarray, exclude: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (at most ``neighbours``) inputs with the largest co-occurrence with output
    ``column`` (ties: the less popular input first; input ``exclude`` left out, -1: none),
    and those co-occurrences."""
    start, stop = cross.indptr[column], cross.indptr[column + 1]
    rows, values = cross.indices[start:stop], cross.data[start:stop]
    keep = (values > 0) & (rows != exclude)
    rows, values = rows[keep], values[keep]
    if len(rows) > neighbours:
        best = np.lexsort((popularity[rows], -values))[:neighbours]
        rows, values = rows[best], values[best]
    return rows, values


def neighbourhood_ridge(
    gram: sp.csr_matrix,
    cross: sp.csc_matrix,
    lam: float,
    neighbours: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each output's ridge regression on its ``neighbours`` strongest inputs (module docstring).

    ``gram`` (N, N): F^T F; ``cross`` (N, C): F^T Y; ``exclude`` (C,): an input left out of
    each output's regression (EASE: the item itself), or None. Returns (C, k) input indices
    (-1 where an output has fewer than k co-occurring inputs) and (C, k) float32 weights.
    """
    outputs = cross.shape[1]
    cross = cross.tocsc()
    popularity = gram.diagonal()
    index = np.full((outputs, neighbours), -1, dtype=np.int64)
    weights = np.zeros((outputs, neighbours), dtype=np.float32)
    for start in range(0, outputs, CHUNK):
        columns = range(start, min(outputs, start + CHUNK))
        chosen = [
            strongest_inputs(
                cross, c, neighbours, popularity, -1 if exclude is None else exclude[c]
            )
            for c in columns
        ]
        width = max(len(rows) for rows, _ in chosen)
        if width == 0:
            continue
        # Padded unknowns have lambda on the diagonal and nothing else, so they solve to 0.
        systems = np.zeros((len(chosen), width, width))
        systems[:, np.arange(width), np.arange(width)] = lam
        targets = np.zeros((len(chosen), width))
        for r, (rows, values) in enumerate(chosen):
            size = len(rows)
            systems[r, :size, :size] += gram[rows][:, rows].toarray()
            targets[r, :size] = values
        solved = np.linalg.solve(systems, targets[..., None])[..., 0]
        for r, (rows, _) in enumerate(chosen):
            index[start + r, : len(rows)] = rows
            weights[start + r, : len(rows)] = solved[r, : len(rows)]
    return index, weights


def columns_matrix(index: torch.Tensor, weights: torch.Tensor, rows: int) -> sp.csr_matrix:
    """(rows, C) sparse weights from :func:`neighbourhood_ridge`'s (C, k) ``index`` (input
    rows, -1: none) and ``weights``: column c holds ``weights[c]`` at rows ``index[c]``."""
    index, weights = index.numpy(), weights.numpy()
    used = index >= 0
    columns = np.broadcast_to(np.arange(len(index))[:, None], index.shape)
    return sp.csr_matrix((weights[used], (index[used], columns[used])), shape=(rows, len(index)))


def sparse_product(inputs: torch.Tensor, matrix: sp.csr_matrix) -> torch.Tensor:
    """Sparse (B, rows) torch ``inputs`` times sparse (rows, C) weights -> dense (B, C)."""
    inputs = inputs.coalesce()
    rows, cols = inputs.indices().numpy()
    histories = sp.csr_matrix(
        (inputs.values().numpy().astype(np.float32), (rows, cols)), shape=inputs.shape
    )
    return torch.from_numpy((histories @ matrix).toarray())
