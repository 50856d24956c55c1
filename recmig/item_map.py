"""An item-space linear map from a user's source row to their target items (cold users), EASE
for warm users: the model of ``ridge_transfer``, ``ridge_map`` and ``text_prior``.

    D      = I + delta B_ss + gamma S        the source-side densifier (B_ss: EASE on the
             source rows; S: the items' text neighbours); I for ``ridge_map``
    M      = argmin_M ||X_T - X_S D M||^2 + mu ||M - M0||^2     over users with both histories
    score  = x_u^S D M      for a user without target history (cold)
             x_u B_ease     for everyone else (EASE, regularised toward a prior B0 if any)

The priors M0 and B0 are hooks (:meth:`ItemMapTransfer.cold_prior`,
:meth:`ItemMapTransfer.warm_prior`; none here: toward zero). The equations and their reasons
are in the strategies' docstrings. Everything is dense in the source catalogue (N_S x N_S), so
the same item limit as EASE holds; the plain map (no densifier, no text, no prior) has the
neighbourhood solver of :mod:`recmig.sparse_ridge` for larger catalogues (``solver``). Under a
privacy budget the cold path is :class:`recmig.private_map.PrivateColdMap`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import scipy.linalg
import torch

from recmig import sparse_ridge
from recmig.batches import UserBatch
from recmig.closed_form import ClosedFormStrategy
from recmig.data.scenario import SOURCE, TARGET
from recmig.data.tensors import TrainingMatrix
from recmig.ease import EASEModel
from recmig.linear import ease_weights, gram_matrix, item_text, text_neighbours
from recmig.private_map import PrivateColdMap, check_release_options
from recmig.strategy import StrategyContext

LEGACY_PRIVATE_KEYS = {
    "cold_weights": "weights",
    "releases": "releases",
    "release_mean": "release_mean",
    "target_mean": "target_mean",
}
"""The private path's buffers as checkpoints made before it was its own class hold them (at
the strategy's top level) -> their names under ``private.``."""


class ItemMapTransfer(ClosedFormStrategy):
    """The map and its fit (see the module docstring); a strategy subclasses it."""

    needs_source = True
    releases_source = True
    config_name: ClassVar[str] = "ridge_transfer"  # how users name it, in error messages
    approximable: ClassVar[bool] = True  # False: a subclass with dense terms of its own

    def __init__(
        self,
        context: StrategyContext,
        lam: float = 4000.0,
        map_lam: float = 300.0,
        densify: float = 1.0,
        source_lam: float = 1000.0,
        text_weight: float = 0.3,
        text_neighbours: int = 20,
        max_items: int = 20000,
        release_dim: int = 8,
        release_basis: str = "public",
        solver: str = "auto",
        neighbours: int = 200,
    ):
        super().__init__(context)
        for name, value in (("map_lam", map_lam), ("source_lam", source_lam)):
            if value <= 0:
                raise ValueError(f"strategy.{name} must be > 0, got {value}")
        for name, value in (("densify", densify), ("text_weight", text_weight)):
            if value < 0:
                raise ValueError(f"strategy.{name} must be >= 0, got {value}")
        if text_neighbours < 1:
            raise ValueError(f"strategy.text_neighbours must be >= 1, got {text_neighbours}")
        self.release = context.release if context.release and context.release.enabled else None
        # Only the plain map stays sparse: the densifier, text neighbours, a text prior and a
        # privacy release are dense in the source catalogue.
        approximable = (
            self.approximable and densify == 0 and text_weight == 0 and self.release is None
        )
        self.solver = sparse_ridge.solver_for(
            self.config_name,
            solver,
            context.vocab_size - 2,
            max_items,
            len(context.target_catalog),
            neighbours,
            approximable,
        )
        self.warm = EASEModel(
            context, lam=lam, max_items=max_items, solver=self.solver, neighbours=neighbours
        )
        self.map_lam, self.densify, self.source_lam = map_lam, densify, source_lam
        self.text_weight, self.k = text_weight, int(text_neighbours)
        self.neighbours = int(neighbours)
        check_release_options(release_basis, release_dim)
        if self.release is not None:
            self.private = PrivateColdMap(self.release, release_basis, release_dim, map_lam)
        elif self.solver == "exact":
            self.register_fitted("cold_weights")  # (vocab_size, N_t): D M on the source rows
        else:
            self.register_sparse("cold_map")  # M, k source items per target item
        # (vocab_size, 1): 1 on target item tokens, so inputs @ it counts a user's target items.
        is_target = torch.zeros(context.vocab_size, 1)
        is_target[context.target_catalog] = 1.0
        self.register_buffer("is_target", is_target, persistent=False)

    def densifier(self, x_source, source: np.ndarray, text=None) -> np.ndarray:
        """D = I + delta B_ss + gamma S over the source items (item columns ``source``);
        ``text``: gamma S when the caller has it already (:meth:`text_part`)."""
        d = np.eye(len(source), dtype=np.float32)
        if self.densify > 0:
            b_ss = ease_weights(gram_matrix(x_source), self.source_lam, np.arange(len(source)))
            d += self.densify * b_ss
        return d + (self.text_part(source) if text is None else text)

    def public_basis(self, source: np.ndarray, text=None) -> np.ndarray:
        """I + gamma S over the source items: fixed before any interaction is read (item text
        is public), what a ``public`` release basis starts from; ``text`` as in
        :meth:`densifier`."""
        return np.eye(len(source), dtype=np.float32) + (
            self.text_part(source) if text is None else text
        )

    def text_part(self, source: np.ndarray) -> np.ndarray | float:
        """gamma S: the text neighbours among the source items (item columns ``source``), 0
        without text (``text_weight`` 0)."""
        if self.text_weight == 0:
            return 0.0
        text = item_text(self.context, "ridge_transfer")[source]
        return self.text_weight * text_neighbours(text, self.k).astype(np.float32)

    def warm_prior(self, matrix: TrainingMatrix) -> np.ndarray | None:
        """(N, N_t) weights B0 from every item to the target items that the warm EASE is
        regularised toward instead of toward zero; None here (a subclass with side
        information provides one, as ``text_prior``)."""
        return None

    def cold_prior(
        self, fitted: np.ndarray, seen: np.ndarray, warm_source_rows: np.ndarray | None
    ) -> np.ndarray | None:
        """(N_s, N_t) map M0 that the cold map is regularised toward (None: toward zero), from
        the map ``fitted`` without one, the target items ``seen`` in its fitting data, and the
        warm prior's source rows (None without a warm prior)."""
        return None

    def fit(self, matrix: TrainingMatrix) -> None:
        private = self.release is not None
        warm_prior = None if private else self.warm_prior(matrix)
        self.warm.fit(self.target_side(matrix) if private else matrix, warm_prior)
        x = self.item_matrix(matrix).tocsc()
        domain = matrix.item_domain[1:]
        source, target = np.flatnonzero(domain == SOURCE), np.flatnonzero(domain == TARGET)
        x_source, x_target = x[:, source].tocsr(), x[:, self.target_columns()].tocsr()
        both = (x_source.getnnz(axis=1) > 0) & (x_target.getnnz(axis=1) > 0)
        if not both.any() and warm_prior is None:
            raise ValueError(
                f"strategy={self.config_name} fits its cold-start map on users with both source "
                "and target training interactions; the scenario has none"
            )
        xs, xt = x_source[both], x_target[both]
        if self.solver == "neighbourhood":  # the plain map (D = I), k source items per target
            gram = sparse_ridge.neighbourhood_gram(
                xs,
                xt.shape[1],
                self.neighbours,
                f"strategy={self.config_name}'s cold map with solver=neighbourhood",
            )
            index, weights = sparse_ridge.neighbourhood_ridge(
                gram, (xs.T @ xt).tocsc(), self.map_lam, self.neighbours
            )
            self.set_sparse("cold_map", np.where(index >= 0, source[index], -1), weights)
            return
        text = self.text_part(source)  # computed once: the densifier and a public basis share it
        d = self.densifier(x_source, source, text)  # dense (N_s, N_s): the exact solver only
        if private:
            basis = self.private.release_basis(x_source, self.public_basis(source, text), d)
            self.private.fit(x_source, x_target, both, basis)
            return
        gram = d.T @ gram_matrix(xs) @ d
        gram[np.diag_indices_from(gram)] += self.map_lam
        factor = scipy.linalg.cho_factor(gram, check_finite=False)
        cross = d.T @ (xs.T @ xt).toarray()
        mapping = scipy.linalg.cho_solve(factor, cross, check_finite=False)
        seen = xt.getnnz(axis=0) > 0
        warm_rows = None if warm_prior is None else warm_prior[source]
        prior = self.cold_prior(d @ mapping, seen, warm_rows)
        if prior is not None:  # argmin ||X_T - X_S D M||^2 + mu ||M - M0||^2
            mapping = scipy.linalg.cho_solve(factor, cross + self.map_lam * prior)
            # A target item no fitting user has has no data term: its zero column is
            # unobserved, not evidence against it, so its map is the prior's.
            mapping[:, ~seen] = prior[:, ~seen]
        weights = np.zeros((x.shape[1], len(target)), dtype=np.float32)
        weights[source] = d @ mapping
        self.cold_weights = self.token_rows(torch.from_numpy(weights))

    @staticmethod
    def target_side(matrix: TrainingMatrix) -> TrainingMatrix:
        """The training matrix with its source columns emptied: what the target side holds."""
        keep = np.append(matrix.item_domain == TARGET, False).astype(np.float32)
        return replace(
            matrix,
            interactions=matrix.interactions.multiply(keep).tocsr(),
            ratings=matrix.ratings.multiply(keep).tocsr(),
        )

    def transfer_summary(self) -> dict[str, float]:
        return self.private.summary() if self.release is not None else {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.release is not None and prefix + "releases" in state_dict:
            for old, new in LEGACY_PRIVATE_KEYS.items():
                state_dict[f"{prefix}private.{new}"] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def target_scores(self, batch: UserBatch) -> torch.Tensor:
        inputs = batch.inputs
        # Cold: no target item in the history (for evaluation, exactly the cold group).
        has_target = self.multiply(inputs, self.is_target) > 0
        warm = self.warm.target_scores(batch)
        if self.solver == "neighbourhood":
            cold = self.sparse_scores("cold_map", inputs)
        elif self.release is None:
            cold = self.multiply(inputs, self.cold_weights)
        else:
            cold = self.private.scores(batch.user)
        return torch.where(has_target, warm, cold)
