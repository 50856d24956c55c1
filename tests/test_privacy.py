import math

import pytest
import torch
from scipy.stats import norm

from recmig.privacy import GaussianRelease, PrivacyConfig, clip_rows, noise_multiplier

DELTA = 1e-5


def analytic_delta(s: float, eps: float) -> float:
    """Balle & Wang (2018), Thm. 8: the delta of N(0, s^2) noise at sensitivity 1."""
    return norm.cdf(1 / (2 * s) - eps * s) - math.exp(eps) * norm.cdf(-1 / (2 * s) - eps * s)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_noise_multiplier_is_tight(eps):
    s = noise_multiplier(eps, DELTA)
    assert analytic_delta(s, eps) <= DELTA * 1.05  # private enough
    assert analytic_delta(0.97 * s, eps) > DELTA  # and not much more noise than needed
    if eps < 1:
        assert s <= math.sqrt(2 * math.log(1.25 / DELTA)) / eps


def test_noise_multiplier_matches_pld_calibration():
    # The library's other route, PLD accounting + calibration: an independent check of the API.
    import dp_accounting

    pld = dp_accounting.calibrate_dp_mechanism(
        dp_accounting.pld.PLDAccountant, dp_accounting.GaussianDpEvent, 0.5, DELTA
    )
    assert noise_multiplier(0.5, DELTA) == pytest.approx(pld, rel=1e-3)


def test_clip_rows():
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip_rows(v, 1.0)
    assert torch.linalg.vector_norm(out[0]) <= 1.0 + 1e-6
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1:], v[1:])  # inside the ball: untouched


def test_release_clips_before_noise():
    release = GaussianRelease(PrivacyConfig(epsilon=1.0, clip=2.0), seed=0)
    v = torch.cat([torch.full((2, 8), 10.0), torch.full((2, 8), 0.1)])
    keys = torch.arange(4)
    clipped = release.release(v, keys) - release.sigma * release.noise(keys, 8)
    norms = torch.linalg.vector_norm(clipped, dim=1)
    assert torch.allclose(norms[:2], torch.full((2,), 2.0), atol=1e-4)  # big rows: on the ball
    assert torch.allclose(clipped[2:], v[2:], atol=1e-4)  # small rows: unchanged


def test_noise_is_fixed_per_key_and_seed():
    v = torch.zeros(3, 50)
    a = GaussianRelease(PrivacyConfig(epsilon=1.0), seed=7)
    first = a.release(v, torch.tensor([5, 6, 5]))
    assert torch.equal(first, a.release(v, torch.tensor([5, 6, 5])))
    assert torch.equal(first[0], first[2])  # same key, same noise
    assert not torch.allclose(first[0], first[1])  # different key
    # A fresh object with the same seed (e.g. another process) reproduces it; another seed not.
    assert torch.equal(
        first,
        GaussianRelease(PrivacyConfig(epsilon=1.0), seed=7).release(v, torch.tensor([5, 6, 5])),
    )
    other = GaussianRelease(PrivacyConfig(epsilon=1.0), seed=8).release(v, torch.tensor([5, 6, 5]))
    assert not torch.allclose(first, other)


def test_noise_std_is_sigma():
    release = GaussianRelease(PrivacyConfig(epsilon=2.0, clip=0.5), seed=1)
    assert release.sigma == pytest.approx(2 * 0.5 * noise_multiplier(2.0, DELTA))
    out = release.release(torch.zeros(200, 500), torch.arange(200))
    assert out.std().item() == pytest.approx(release.sigma, rel=0.05)
    assert abs(out.mean().item()) < 0.05 * release.sigma


def test_release_keeps_device_and_dtype():
    out = GaussianRelease(PrivacyConfig(epsilon=1.0), seed=0).release(
        torch.zeros(2, 3, dtype=torch.float64), torch.arange(2)
    )
    assert out.dtype == torch.float64


def test_infinite_epsilon_is_the_identity():
    for eps in (math.inf, "inf", ".inf"):
        release = GaussianRelease(PrivacyConfig(epsilon=eps), seed=0)
        v = torch.full((2, 4), 100.0)  # far outside the clip ball
        assert release.release(v, torch.arange(2)) is v
        assert release.summary()["privacy/sigma"] == 0.0
        assert release.summary()["privacy/epsilon"] == math.inf


def test_summary_keys():
    summary = GaussianRelease(PrivacyConfig(epsilon=1.0), seed=0).summary()
    for key in ("epsilon", "delta", "clip", "sigma", "noise_multiplier"):
        assert isinstance(summary[f"privacy/{key}"], float)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"epsilon": 0}, "epsilon"),
        ({"epsilon": -1}, "epsilon"),
        ({"epsilon": "lots"}, "epsilon"),
        ({"delta": 0}, "delta"),
        ({"delta": 1}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"clip": 0}, "clip"),
        ({"clip": -2}, "clip"),
    ],
)
def test_bad_config(kwargs, option):
    with pytest.raises(ValueError, match=rf"^privacy\.{option} must be"):
        PrivacyConfig(**kwargs)
