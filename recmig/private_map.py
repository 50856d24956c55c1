"""The cold path of an item-space map under a privacy budget: released rows, then a ridge map.

The target side never sees a raw source history. Every user's source row is released once,
r_u = clip_C(x_u^S F) + z_u, through the Gaussian mechanism (:mod:`recmig.privacy`), kept for
the run and reused whenever the user is scored. F maps a row to ``dim`` numbers (the noise's
norm grows with the square root of the released dimensions, so a short release carries more of
the user per unit of noise):

- ``basis: public`` (default): F = P R with a public matrix P fixed before any interaction is
  read (the identity, plus the item-text neighbours of the strategy that has them: item text
  is public) and a seeded Gaussian random projection R. Replacing one user's source history
  changes that user's release only, and the (epsilon, delta) guarantee covers everything the
  target side receives;
- ``basis: source_model``: F = D V with the source side's densifier D and the top principal
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

Everything the target side computes is post-processing of the releases and its own
interactions. The releases, mu_R, mu_T, gamma M and gamma are fitted buffers (saved in the
run's checkpoint).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch

from recmig.closed_form import FittedBuffers
from recmig.evaluation.ranking import ranking_metrics
from recmig.privacy import GaussianRelease

SHRINK_GRID = (0.0, 0.1, 0.25, 0.5, 1.0)
"""Candidate shrinkages gamma of the cold map's user-specific part."""

BASES = ("public", "source_model")


def check_release_options(basis: str, dim: int) -> None:
    """``strategy.release_basis`` and ``strategy.release_dim``, checked whether or not the run
    has a privacy budget (a typo should not wait for the first private run)."""
    if basis not in BASES:
        raise ValueError(
            f"strategy.release_basis must be 'public' or 'source_model', got {basis!r}"
        )
    if dim < 0:
        raise ValueError(f"strategy.release_dim must be >= 0 (0: full rows), got {dim}")


class PrivateColdMap(FittedBuffers):
    """Released source rows and the centred ridge map fit on them (see the module docstring)."""

    def __init__(self, release: GaussianRelease, basis: str, dim: int, map_lam: float):
        super().__init__()
        check_release_options(basis, dim)
        self.release, self.basis, self.dim, self.map_lam = release, basis, int(dim), map_lam
        self.register_fitted("releases")  # (num_users, k): each user's release r_u
        self.register_fitted("release_mean")  # (k,) mu_R
        self.register_fitted("target_mean")  # (N_t,) mu_T
        self.register_fitted("weights")  # (k, N_t) gamma M
        self.register_fitted("shrink")  # () gamma, NaN in checkpoints made before it was kept

    def release_basis(
        self, x_source: sp.csr_matrix, public: np.ndarray, densifier: np.ndarray
    ) -> np.ndarray:
        """(N_s, k) the fixed F that each user's source row is released through, from the
        ``public`` (N_s, N_s) matrix or the source side's ``densifier`` D (N_s, N_s)."""
        k, n = self.dim, len(public)
        if self.basis == "public":
            if k and k < n:  # a seeded Gaussian random projection (Johnson-Lindenstrauss)
                rng = np.random.default_rng(0)
                return public @ (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
            return public
        if not k or k >= n:
            return densifier
        # The source side's model: D and the principal directions of its densified rows.
        dense = np.asarray(x_source @ densifier, dtype=np.float64)
        _, vectors = np.linalg.eigh(dense.T @ dense)
        return densifier @ vectors[:, ::-1][:, :k].astype(np.float32)

    def fit(
        self,
        x_source: sp.csr_matrix,
        x_target: sp.csr_matrix,
        both: np.ndarray,
        basis: np.ndarray,
    ) -> None:
        """Release every user's (num_users, N_s) source row once through ``basis`` F, then fit
        the cold map on the released rows of the users with ``both`` domains."""
        rows = torch.from_numpy(np.asarray(x_source @ basis, dtype=np.float32))
        # One release per user for the run: kept, and reused whenever the user is scored.
        self.releases = self.release.release(rows, torch.arange(len(rows)))
        released = self.releases[torch.from_numpy(both)].double().numpy()
        targets = x_target[both].toarray().astype(np.float64)
        shrink = self.cross_validated_shrink(released, targets)
        mu_r, mu_t, mapping = self.centred_map(released, targets)
        self.weights = torch.from_numpy((shrink * mapping).astype(np.float32))
        self.release_mean = torch.from_numpy(mu_r.astype(np.float32))
        self.target_mean = torch.from_numpy(mu_t.astype(np.float32))
        self.shrink = torch.tensor(shrink, dtype=torch.float32)

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
        return float(SHRINK_GRID[int(np.argmax(totals))])

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """(B, N_t) cold scores of scenario users (indices) from their releases. A history
        from outside the scenario (a new user, user -1) was never released: the target side
        has nothing of it."""
        if (users < 0).any():
            raise ValueError(
                "ridge_transfer under privacy scores the scenario's users only: their source "
                "rows were released once when it was fitted, and a new source history would "
                "need a release (and a share of the budget) of its own"
            )
        return self.target_mean + (self.releases[users] - self.release_mean) @ self.weights

    def summary(self) -> dict[str, float]:
        """gamma for ``metrics.json`` (none for a checkpoint made before gamma was kept)."""
        gamma = float(self.shrink) if self.shrink.numel() else float("nan")
        return {} if np.isnan(gamma) else {"privacy/map_shrink": gamma}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "releases" in state_dict and prefix + "shrink" not in state_dict:
            state_dict[prefix + "shrink"] = torch.tensor(float("nan"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
