"""pinfeed.calibration: the simple and the exact inverse of negative downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.metrics import expected_calibration_error
from pinfeed.calibration import (
    calibrate,
    calibrate_exact,
    calibrate_logits,
    downsample_negatives,
    effective_sample_rate,
    fit_effective_sample_rates,
    fit_other_engaged_share,
)
from pinfeed.errors import ConfigError


def test_hand_computed_value() -> None:
    # q = 0.5, w = 0.1: 0.5 / (0.5 + 0.5 / 0.1) = 0.5 / 5.5 = 1 / 11.
    assert calibrate(0.5, 0.1) == pytest.approx(1 / 11, rel=1e-12)
    assert calibrate(0.2, 0.5) == pytest.approx(0.2 / (0.2 + 0.8 / 0.5), rel=1e-12)


def test_identity_at_rate_one_and_fixed_endpoints() -> None:
    q = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(calibrate(q, 1.0), q, atol=1e-15)
    np.testing.assert_array_equal(calibrate([0.0, 1.0], 0.01), [0.0, 1.0])


def test_monotone_and_never_above_the_sampled_score() -> None:
    q = np.linspace(0.0, 1.0, 1001)
    for w in (0.01, 0.1, 0.5):
        p = calibrate(q, w)
        assert np.all(np.diff(p) > 0)
        assert np.all(p <= q + 1e-15)


def test_vectorised_over_heads_with_per_head_rates() -> None:
    rng = np.random.default_rng(0)
    q = rng.uniform(size=(50, 4))
    rates = np.array([0.1, 0.2, 0.5, 1.0])
    together = calibrate(q, rates)
    for t, w in enumerate(rates):
        np.testing.assert_allclose(together[:, t], calibrate(q[:, t], w))


def test_logit_form_matches_probability_form_and_stays_finite() -> None:
    logits = np.array([[-40.0, -2.0, 0.0, 3.0], [1.0, 2.0, 30.0, 60.0]])
    rates = np.array([0.1, 0.2, 0.3, 0.4])
    expected = calibrate(1.0 / (1.0 + np.exp(-logits)), rates)
    np.testing.assert_allclose(calibrate_logits(logits, rates), expected, rtol=1e-9, atol=1e-15)
    assert np.all(np.isfinite(calibrate_logits([[-1e4, 1e4, 0, 0]], rates)))


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_rate_names_the_field(bad: float) -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        calibrate(0.3, bad)
    with pytest.raises(ConfigError, match=r"sample_rate\[2\]"):
        calibrate(np.full((3, 4), 0.3), [0.1, 0.1, bad, 0.1])


def test_downsampling_keeps_every_engaged_row() -> None:
    rng = np.random.default_rng(1)
    labels = rng.uniform(size=(10_000, 4)) < 0.05
    keep = downsample_negatives(labels, 0.2, rng)
    engaged = labels.any(axis=1)
    assert keep[engaged].all()
    assert keep[~engaged].mean() == pytest.approx(0.2, abs=0.02)


def test_inverts_downsampling_on_a_simulated_head() -> None:
    """Known p per group, negatives kept at w: the sample's positive rate maps back to p."""
    rng = np.random.default_rng(2)
    w = 0.1
    for p_true in (0.01, 0.05, 0.2, 0.6):
        labels = (rng.uniform(size=400_000) < p_true)[:, None]
        keep = downsample_negatives(labels, w, rng)
        q_empirical = labels[keep, 0].mean()
        assert q_empirical > p_true  # the sample is enriched in positives
        assert calibrate(q_empirical, w) == pytest.approx(p_true, rel=0.05)


def test_fitted_share_and_rate_by_hand() -> None:
    # Head 0: one negative engaged otherwise (row 1, kept at 1), two rows with no engagement
    # (kept at 0.5, so 4 on the stream): r = 1 / (1 + 4) = 0.2, w_0 = (1 + 2) / (1 + 4) = 0.6.
    labels = np.array([[1, 0], [0, 1], [0, 0], [0, 0]])
    np.testing.assert_allclose(fit_other_engaged_share(labels, 0.5), [0.2, 0.2])
    np.testing.assert_allclose(fit_effective_sample_rates(labels, 0.5), [0.6, 0.6])
    np.testing.assert_allclose(effective_sample_rate(0.5, 0.2), 0.6)


def _two_head_stream(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Head 0 is evaluated; head 1 is 'another engagement', independent given x, so
    r(x) = P(other | not head 0, x) = p_other(x)."""
    p_head = rng.uniform(0.02, 0.4, size=n)
    p_other = rng.uniform(0.05, 0.6, size=n)
    labels = np.column_stack([rng.uniform(size=n) < p_head, rng.uniform(size=n) < p_other])
    return {"p_head": p_head, "p_other": p_other, "labels": labels}


def test_exact_correction_beats_the_simple_formula() -> None:
    rng = np.random.default_rng(3)
    w = 0.1
    stream = _two_head_stream(rng, 200_000)
    keep = downsample_negatives(stream["labels"], w, rng)
    # A perfect model of the sampled data predicts q(x) = p / (p + (1 - p) w_eff(x)).
    r = stream["p_other"]
    w_eff = effective_sample_rate(w, r)
    p = stream["p_head"]
    q = p / (p + (1.0 - p) * w_eff)
    y = stream["labels"][:, 0]

    simple = expected_calibration_error(y, calibrate(q, w))
    # From the sample's counts alone, the share of head-0 negatives engaged otherwise on the
    # stream is recovered.
    r_fitted = fit_other_engaged_share(stream["labels"][keep], w)[0]
    negatives = ~y
    assert r_fitted == pytest.approx(stream["labels"][negatives, 1].mean(), rel=0.03)
    per_head = expected_calibration_error(y, calibrate_exact(q, w, r_fitted))
    per_row = expected_calibration_error(y, calibrate_exact(q, w, r))

    assert simple > 0.05
    assert per_head < simple / 2
    assert per_row < per_head
    assert per_row < 0.01
