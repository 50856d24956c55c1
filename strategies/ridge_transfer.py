"""An item-space linear map with a source-side densifier (cold users), EASE for warm users.

What it is: EMCDR's linear mapping (Man et al., IJCAI 2017) fit between item spaces instead of
latent factors, i.e. a ridge regression from a user's source row to their target row, with the
source row first densified by source-side EASE (Steck, WWW 2019) and, optionally, the language
model's text neighbours. :mod:`.ridge_map` is the same map without the densifier and the text
(the baseline that shows what they add); :mod:`.text_prior` regularises the map toward text.

EASE (:mod:`recmig.ease`) learns the source -> target weights of B as what a source item adds to a
target item *given all the user's other items*, target items included. A cold user has no
target item, so at test time EASE's source -> target weights answer a question they were not
fit for. Here the cold path is fit on exactly the cold-start question, "which target items
does a user with this source history have?", on the users who have both (the objective
mismatch of the baselines issue, in closed form):

    S      = row-normalised k-nearest-neighbour text similarity among source items (cosine of
             the item encoder's language-model features, each item's ``text_neighbours``)
    D      = I + delta B_ss + gamma S        densify a source history before mapping: B_ss is
             EASE on every user's source rows (cold users' too: the source domain is fully
             observed), S spreads interest to source items that read alike
    M      = argmin_M ||X_T - X_S D M||^2 + mu ||M||^2     over users with both histories
             = (D^T G_S D + mu I)^-1 D^T X_S^T X_T,        G_S = X_S^T X_S of those users
    score  = x_u^S D M      for a user without target history (cold)
             x_u B_ease     for everyone else (warm users get EASE exactly)

Everything is dense in the source catalogue (N_S x N_S), so the same item limit as EASE holds.
Without the densifier and the text (:mod:`.ridge_map`), the map and EASE have the
neighbourhood solver of :mod:`recmig.sparse_ridge` for larger catalogues (``solver``).

Under a privacy budget (``privacy.epsilon`` finite) the target side never sees a raw source
history. Every user's source row is released once, r_u = clip_C(x_u^S F) + z_u, through the
Gaussian mechanism (:mod:`recmig.privacy`), kept for the run and reused whenever the user is
scored. F maps a row to ``release_dim`` numbers (the noise's norm grows with the square root
of the released dimensions, so a short release carries more of the user per unit of noise):

- ``release_basis: public`` (default): F = (I + gamma S) R with the text neighbours S (item
  text is public) and a seeded Gaussian random projection R. F is fixed before any interaction
  is read, so replacing one user's source history changes that user's release only, and the
  (epsilon, delta) guarantee covers everything the target side receives;
- ``release_basis: source_model``: F = D V with the densifier D above and the top principal
  directions V of the densified rows: the source side's own model, fit on its users' rows.
  Each release is then (epsilon, delta)-DP *given F*, but F itself is computed from every
  user's history and reaches the target side unprotected (DP training of D and V would be
  needed to cover it).

The target side fits the cold map on the released rows of the users who have both, centred
(an intercept: a release that is mostly noise then falls back to the target's popularity
instead of to noise), and shrinks the user-specific part by a gamma chosen by 2-fold
cross-validation of NDCG@10 on those users,

    M = argmin ||(X_T - 1 mu_T) - (R - 1 mu_R) M||^2 + mu ||M||^2
    score = mu_T + gamma (r_u - mu_R) M

and scores warm users by EASE on the target items only. Everything the target side computes
is post-processing of the releases and its own interactions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import scipy.linalg
import torch

from recmig import sparse_ridge
from recmig.closed_form import ClosedFormStrategy
from recmig.data.scenario import SOURCE, TARGET
from recmig.data.tensors import TrainingMatrix
from recmig.ease import EASEModel
from recmig.evaluation.ranking import ranking_metrics
from recmig.linear import ease_weights, gram_matrix, item_text, text_neighbours
from recmig.strategy import StrategyContext

SHRINK_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)
"""Candidate shrinkages of the private cold map's user-specific part (see RidgeTransfer)."""


class RidgeTransfer(ClosedFormStrategy):
    description = (
        "closed form: item-space ridge map from the densified source row (cold), EASE (warm)"
    )
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
        if release_dim < 0:
            raise ValueError(f"strategy.release_dim must be >= 0 (0: full rows), got {release_dim}")
        self.release_dim = int(release_dim)
        if release_basis not in ("public", "source_model"):
            raise ValueError(
                f"strategy.release_basis must be 'public' or 'source_model', got {release_basis!r}"
            )
        self.basis = release_basis
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
        if self.solver == "exact":
            self.register_fitted("cold_weights")  # (vocab_size, N_t): D M on the source rows
        else:
            self.register_sparse("cold_map")  # M, k source items per target item
        if self.release is not None:  # the private cold path (see the module docstring)
            self.register_fitted("releases")  # (num_users, k): each user's release
            self.register_fitted("release_mean")  # (k,) mu_R
            self.register_fitted("target_mean")  # (N_t,) mu_T
        # (vocab_size, 1): 1 on target item tokens, so inputs @ it counts a user's target items.
        is_target = torch.zeros(context.vocab_size, 1)
        is_target[context.target_catalog] = 1.0
        self.register_buffer("is_target", is_target, persistent=False)

    def densifier(self, x_source, source: np.ndarray) -> np.ndarray:
        """D = I + delta B_ss + gamma S over the source items (item columns ``source``)."""
        d = np.eye(len(source), dtype=np.float32)
        if self.densify > 0:
            b_ss = ease_weights(gram_matrix(x_source), self.source_lam, np.arange(len(source)))
            d += self.densify * b_ss
        if self.text_weight > 0:
            text = item_text(self.context, "ridge_transfer")[source]
            d += self.text_weight * text_neighbours(text, self.k).astype(np.float32)
        return d

    def warm_prior(self, matrix: TrainingMatrix) -> np.ndarray | None:
        """(N, N_t) weights B0 from every item to the target items that the warm EASE is
        regularised toward instead of toward zero; None here (a subclass with side
        information provides one, :mod:`.text_prior`)."""
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
        d = self.densifier(x_source, source)  # dense (N_s, N_s): the exact solver only
        if private:
            self.fit_private(x_source, x_target, d, both, source)
            return
        gram = d.T @ gram_matrix(xs) @ d
        gram[np.diag_indices_from(gram)] += self.map_lam
        factor = scipy.linalg.cho_factor(gram, check_finite=False)
        cross = d.T @ (xs.T @ xt).toarray()
        mapping = scipy.linalg.cho_solve(factor, cross, check_finite=False)
        seen = xt.getnnz(axis=0) > 0
        warm_rows = None if warm_prior is None else warm_prior[source]
        prior = None if private else self.cold_prior(d @ mapping, seen, warm_rows)
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

    def release_basis(self, x_source, d: np.ndarray, source: np.ndarray) -> np.ndarray:
        """(N_s, k) the fixed function f(x) = x F that each user's source row is released
        through (see ``release_basis`` in the module docstring)."""
        k = self.release_dim
        if self.basis == "public":
            # Fixed before any interaction is read: text neighbours (item text is public) and
            # a seeded Gaussian random projection (Johnson-Lindenstrauss).
            f = np.eye(len(source), dtype=np.float32)
            if self.text_weight > 0:
                text = item_text(self.context, "ridge_transfer")[source]
                f += self.text_weight * text_neighbours(text, self.k).astype(np.float32)
            if k and k < len(source):
                rng = np.random.default_rng(0)
                f = f @ (rng.standard_normal((len(source), k)) / np.sqrt(k)).astype(np.float32)
            return f
        if not k or k >= len(source):
            return d
        # The source side's model: D and the principal directions of its densified rows.
        dense = np.asarray(x_source @ d, dtype=np.float64)
        _, vectors = np.linalg.eigh(dense.T @ dense)
        return d @ vectors[:, ::-1][:, :k].astype(np.float32)

    def fit_private(self, x_source, x_target, d, both: np.ndarray, source: np.ndarray) -> None:
        """Release every user's source row once, then fit the cold map on the released rows
        of the users with both (see the module docstring); ``source``: the source columns."""
        f = self.release_basis(x_source, d, source)
        rows = torch.from_numpy(np.asarray(x_source @ f, dtype=np.float32))
        # One release per user for the run: kept, and reused whenever the user is scored.
        self.releases = self.release.release(rows, torch.arange(len(rows)))
        released = self.releases[torch.from_numpy(both)].double().numpy()
        targets = x_target[both].toarray().astype(np.float64)
        shrink = self.cross_validated_shrink(released, targets)
        mu_r, mu_t, mapping = self.centred_map(released, targets)
        self.cold_weights = torch.from_numpy((shrink * mapping).astype(np.float32))
        self.release_mean = torch.from_numpy(mu_r.astype(np.float32))
        self.target_mean = torch.from_numpy(mu_t.astype(np.float32))

    def released(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch users' releases, made once at fit. A history from outside the scenario
        (a new user, user -1) was never released: the target side has nothing of it."""
        users = batch["user"]
        if (users < 0).any():
            raise ValueError(
                "ridge_transfer under privacy scores the scenario's users only: their source "
                "rows were released once when it was fitted, and a new source history would "
                "need a release (and a share of the budget) of its own"
            )
        return self.releases[users]

    def centred_map(self, released: np.ndarray, targets: np.ndarray):
        """mu_R, mu_T and the ridge map M from centred released rows to centred target rows."""
        mu_r, mu_t = released.mean(0), targets.mean(0)
        centred = released - mu_r
        gram = centred.T @ centred
        gram[np.diag_indices_from(gram)] += self.map_lam
        mapping = scipy.linalg.solve(
            gram, centred.T @ (targets - mu_t), assume_a="pos", check_finite=False
        )
        return mu_r, mu_t, mapping

    def cross_validated_shrink(self, released: np.ndarray, targets: np.ndarray) -> float:
        """gamma in score = mu_T + gamma (r_u - mu_R) M, by 2-fold cross-validation of NDCG@10
        on the fitting users (their target items ranked from their releases alone).

        The map is the least-squares predictor from a noisy release, but a ranking of the
        top items can still be better served by the target's popularity (gamma = 0) when the
        noise shuffles the user-specific part: the folds decide, from released rows and the
        target's own interactions only (post-processing)."""
        folds = np.random.default_rng(0).permutation(len(released)) % 2
        totals = np.zeros(len(SHRINK_GRID))
        for fold in (0, 1):
            fit, held = folds != fold, folds == fold
            mu_r, mu_t, mapping = self.centred_map(released[fit], targets[fit])
            part = torch.from_numpy((released[held] - mu_r) @ mapping)
            relevant = torch.from_numpy(targets[held] > 0)
            keep = relevant.any(1)
            for i, gamma in enumerate(SHRINK_GRID):
                scores = torch.from_numpy(mu_t) + gamma * part
                ndcg = ranking_metrics(scores[keep], relevant[keep], ks=(10,))["ndcg@10"]
                totals[i] += ndcg.sum().item()
        best = float(SHRINK_GRID[int(np.argmax(totals))])
        self.chosen_shrink = best
        return best

    def transfer_summary(self) -> dict[str, float]:
        shrink = getattr(self, "chosen_shrink", None)
        return {} if shrink is None else {"privacy/map_shrink": shrink}

    def target_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = batch["inputs"]
        # Cold: no target item in the history (for evaluation, exactly the cold group).
        has_target = self.multiply(inputs, self.is_target) > 0
        warm = self.warm.target_scores(batch)
        if self.solver == "neighbourhood":
            cold = self.sparse_scores("cold_map", inputs)
        elif self.release is None:
            cold = self.multiply(inputs, self.cold_weights)
        else:
            cold = self.target_mean + (self.released(batch) - self.release_mean) @ self.cold_weights
        return torch.where(has_target, warm, cold)
