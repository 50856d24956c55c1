"""Differentially private release of per-user vectors with the Gaussian mechanism.

Guarantee. Each released row is ``clip_C(f(h_u)) + z_u`` with ``z_u ~ N(0, sigma^2 I)``, where
``f`` is a fixed function (fixed before the release and not fit on the protected data), ``h_u``
is user ``u``'s source-domain history, and ``clip_C`` scales a vector down to L2 norm <= C. The
set of released users (their keys) is taken as public. Neighbouring datasets differ in ONE
user's whole source history, *replaced* by any other history (the empty one included). That
changes that user's row only, from one point of the C-ball to another, so the L2 sensitivity of
the whole (B, n) release is 2C. We use replace-one rather than add/remove-one because add/remove
only has sensitivity C when an absent user's row is the zero vector, and ``f`` of an empty
history is in general not zero (e.g. a bias or a BOS prior). ``sigma = 2C * noise_multiplier(
epsilon, delta)``, the exact (analytic, Balle & Wang 2018) calibration of one Gaussian
mechanism, so the release is (epsilon, delta)-DP for each user's source history.

Protected: the released vectors, and by post-processing everything computed from them alone
(scores, rankings, metrics, a model trained on them with no other access to the histories).
Not protected: anything that read the source histories another way, in particular ``f`` itself
if it was fit on source users' data (that needs DP training, e.g. DP-SGD with Opacus), and the
set of users released.

Noise is drawn once per run: user ``u``'s noise is a deterministic function of (seed, key), so
re-releasing the *same* vector (each epoch, each evaluation) costs nothing extra, whereas fresh
noise per call would spend the budget again. Two caveats follow. Releasing a *different* vector
for the same user (another ``f``, another history cut-off) with the same noise reveals the
difference exactly, so release one vector per user per run. And anyone who knows the seed can
regenerate and subtract the noise: pass ``seed=None`` (fresh secret entropy for this run) unless
the seed is kept secret.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

# brentq's tolerance on sigma in dp_accounting.get_sigma_gaussian; the root is within it, so we
# add a margin of it to err on the private side.
_SIGMA_TOL = 1e-10


def as_float(name: str, value: object) -> float:
    if isinstance(value, str) and value.strip().lower() in (".inf", "+.inf"):
        return math.inf  # YAML's spelling, as a command-line override passes it through
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"privacy.{name} must be a number, got {value!r}") from None


@dataclass
class PrivacyConfig:
    """``epsilon = math.inf`` (the default) turns the mechanism off."""

    epsilon: float = math.inf
    delta: float = 1e-5
    clip: float = 1.0

    def __post_init__(self) -> None:
        # float() so "inf" typed on the command line works like YAML's .inf.
        self.epsilon = as_float("epsilon", self.epsilon)
        self.delta = as_float("delta", self.delta)
        self.clip = as_float("clip", self.clip)
        # Written as `not (... )` so NaN fails too.
        if not self.epsilon > 0:
            raise ValueError(
                f"privacy.epsilon must be > 0 (math.inf turns the mechanism off), "
                f"got {self.epsilon:g}"
            )
        if not 0 < self.delta < 1:
            raise ValueError(f"privacy.delta must be in (0, 1), got {self.delta:g}")
        if not 0 < self.clip < math.inf:
            raise ValueError(f"privacy.clip must be > 0 and finite, got {self.clip:g}")

    @property
    def enabled(self) -> bool:
        return math.isfinite(self.epsilon)


@functools.cache
def noise_multiplier(epsilon: float, delta: float) -> float:
    """The smallest sigma / sensitivity for which one Gaussian mechanism is (epsilon, delta)-DP.

    dp_accounting's exact analytic calibration (Balle & Wang 2018): valid for every epsilon,
    unlike the classical sqrt(2 ln(1.25/delta))/epsilon (epsilon < 1 only), and it agrees with
    its PLD accountant + calibrate_dp_mechanism, which is seconds slower and discretised.
    """
    import dp_accounting  # (here: the library loads only for runs that use privacy)

    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon:g}, {delta:g}")
    if math.isinf(epsilon):
        return 0.0
    return float(dp_accounting.get_sigma_gaussian(epsilon, delta, tol=_SIGMA_TOL)) + _SIGMA_TOL


def clip_rows(vectors: torch.Tensor, clip: float) -> torch.Tensor:
    """Scale each row down to L2 norm <= clip; rows already inside are returned bit-identical."""
    norms = torch.linalg.vector_norm(vectors, dim=1, keepdim=True)
    scale = torch.where(norms > clip, clip / norms, torch.ones_like(norms))
    return vectors * scale


class GaussianRelease:
    """Clip + fixed per-user Gaussian noise; the identity when ``config.epsilon`` is inf."""

    def __init__(self, config: PrivacyConfig, seed: int | None) -> None:
        if seed is not None and seed < 0:
            raise ValueError(f"privacy seed must be >= 0 or None, got {seed}")
        self.config = config
        # None: 128 bits of OS entropy, fixed for this object's lifetime but known to nobody.
        self._entropy: int = np.random.SeedSequence().entropy if seed is None else int(seed)
        self.noise_multiplier = noise_multiplier(config.epsilon, config.delta)
        self.sensitivity = 2.0 * config.clip  # replace-one (see the module docstring)
        self.sigma = self.sensitivity * self.noise_multiplier if config.enabled else 0.0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def noise(self, keys: torch.Tensor, n: int) -> torch.Tensor:
        """(B, n) float32 standard normals on the CPU, row i a function of (seed, keys[i]) only.

        Drawn on the CPU so a user's noise is the same whatever device the run uses.
        """
        out = torch.empty(len(keys), n, dtype=torch.float32)
        gen = torch.Generator()
        for i, key in enumerate(keys.tolist()):
            # SeedSequence hashes (seed, key) stably across processes and platforms.
            state = np.random.SeedSequence([self._entropy, key]).generate_state(1, np.uint64)
            gen.manual_seed(int(state[0]))
            torch.randn(n, generator=gen, out=out[i])
        return out

    def release(self, vectors: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """vectors (B, n) float, keys (B,) int64 user indices -> the (B, n) private release."""
        if not self.enabled:
            return vectors  # off: exactly today's behaviour, no clip, no copy
        if vectors.ndim != 2 or keys.shape != (len(vectors),):
            raise ValueError(
                f"release needs vectors (B, n) and keys (B,), got {tuple(vectors.shape)} "
                f"and {tuple(keys.shape)}"
            )
        if keys.dtype.is_floating_point or keys.dtype.is_complex or (keys < 0).any():
            raise ValueError("release needs non-negative integer keys")
        noise = self.noise(keys.cpu(), vectors.shape[1]).to(vectors.device, vectors.dtype)
        return clip_rows(vectors, self.config.clip) + self.sigma * noise

    def summary(self) -> dict[str, float]:
        """Flat metrics for metrics.json (epsilon is inf and sigma 0 when off)."""
        return {
            "privacy/epsilon": self.config.epsilon,
            "privacy/delta": self.config.delta,
            "privacy/clip": self.config.clip,
            "privacy/sensitivity": self.sensitivity,
            "privacy/noise_multiplier": self.noise_multiplier,
            "privacy/sigma": self.sigma,
        }
