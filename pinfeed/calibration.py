"""Undo negative downsampling: map a head's score on the sampled training distribution back to
a probability on the full impression stream. numpy only, so evaluation and serving share it.

Notation (H heads in `pinfeed.schema.ENGAGEMENTS` order, N rows):

- `p_sampled` q: the model's probability that head t fires, learnt on the *sampled* data.
- `p_calibrated` p: the same probability on the unsampled stream.
- `sample_rate` w: the fraction of impressions *without any engagement* the training set kept;
  every impression with some engagement was kept (rate 1).

Simple correction (Dal Pozzolo et al. 2015). If every negative of head t was kept at rate w,
then q = p / (p + (1 - p) w), and inverting gives

    p = q / (q + (1 - q) / w)        equivalently  logit(p) = logit(q) + log(w).

Exact correction. The negatives of head t (y_t = 0) are of two kinds: "engaged otherwise" (some
other head fired; kept at rate 1) and "no engagement" (kept at rate w). With
r(x) = P(some other engagement | y_t = 0, x) on the unsampled stream, the fraction of head-t
negatives that survive sampling is

    w_t(x) = r(x) + (1 - r(x)) w,

so q = p / (p + (1 - p) w_t(x)) and p = q / (q + (1 - q) / w_t(x)): the simple formula with the
effective rate w_t(x) in place of w. Two practical models of r:

- per-head constant r_t (`fit_other_engaged_share`): from the training-set counts, n_o head-t
  negatives with another engagement (all kept) and n_n rows without engagement (kept at w, so
  n_n / w of them on the stream): r_t = n_o / (n_o + n_n / w). The effective rate is then
  w_t = (n_o + n_n) / (n_o + n_n / w), the kept fraction of head-t negatives
  (`fit_effective_sample_rates`). Exact when r does not vary with x; this is what the manifest
  stores and serving applies.
- per-row r(x) (`calibrate_exact` with an [N, H] array), from any model of "other engagement
  given not t"; removes the remaining error where r varies strongly across candidates.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pinfeed.errors import ConfigError, SchemaError


def _rates(sample_rate: ArrayLike, field: str = "sample_rate") -> NDArray[np.float64]:
    """Validate rates in (0, 1]; raise naming the first bad entry."""
    rates = np.asarray(sample_rate, dtype=np.float64)
    bad = ~np.isfinite(rates) | (rates <= 0.0) | (rates > 1.0)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0]) if rates.ndim else ()
        raise ConfigError(
            f"{field}{list(index) if index else ''} = {rates[index]!r}: a sample rate must be "
            "in (0, 1] (the fraction of unengaged impressions the training set kept)"
        )
    return rates


def calibrate(p_sampled: ArrayLike, sample_rate: ArrayLike) -> NDArray[np.float64]:
    """p = q / (q + (1 - q) / w), elementwise with numpy broadcasting.

    Args:
        p_sampled: q, [..., H] (or any shape) probabilities learnt on the sampled data.
        sample_rate: w in (0, 1]: a scalar, per head [H], or per row and head [N, H].

    Returns:
        p_calibrated, same shape as the broadcast of the inputs. w = 1 is the identity.
    """
    q = np.asarray(p_sampled, dtype=np.float64)
    w = _rates(sample_rate)
    # q w / (q w + 1 - q) is the same expression multiplied through by w; it has no division
    # by zero at q = 0 and returns exactly 1 at q = 1.
    return q * w / (q * w + (1.0 - q))


def calibrate_logits(logits: ArrayLike, sample_rate: ArrayLike) -> NDArray[np.float64]:
    """Calibrated probabilities straight from the model's logits: sigmoid(logit + log w).

    Numerically safer than `calibrate(sigmoid(logits), w)` for very confident scores; the ONNX
    ranker outputs logits [B, H], so this is serving's entry point.
    """
    z = np.asarray(logits, dtype=np.float64) + np.log(_rates(sample_rate))
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def effective_sample_rate(
    sample_rate: ArrayLike, p_other_engaged: ArrayLike
) -> NDArray[np.float64]:
    """w_t = r + (1 - r) w: the kept fraction of head-t negatives when those with another
    engagement (share r among head-t negatives on the stream) were all kept."""
    w = _rates(sample_rate)
    r = np.asarray(p_other_engaged, dtype=np.float64)
    if not np.all((r >= 0.0) & (r <= 1.0)):
        raise ConfigError("p_other_engaged: shares must lie in [0, 1]")
    return r + (1.0 - r) * w


def calibrate_exact(
    p_sampled: ArrayLike, sample_rate: ArrayLike, p_other_engaged: ArrayLike
) -> NDArray[np.float64]:
    """The exact correction: `calibrate` with the effective rate r + (1 - r) w.

    Args:
        p_sampled: q, [N, H].
        sample_rate: w, the rate applied to rows without any engagement (scalar or [H]).
        p_other_engaged: r = P(other engagement | y_t = 0) on the stream, per head [H]
            (`fit_other_engaged_share`) or per row [N, H].
    """
    return calibrate(p_sampled, effective_sample_rate(sample_rate, p_other_engaged))


def _labels(labels_sampled: ArrayLike) -> NDArray[np.bool_]:
    labels = np.asarray(labels_sampled)
    if labels.ndim != 2:
        raise SchemaError(f"labels must be [N, H] engagement flags, got shape {labels.shape}")
    return labels.astype(bool)


def fit_other_engaged_share(labels_sampled: ArrayLike, sample_rate: float) -> NDArray[np.float64]:
    """Per-head r_t = n_o / (n_o + n_n / w) from the sampled training set's labels [N, H].

    n_o counts rows where head t is 0 but another head fired (kept at rate 1); n_n counts rows
    with no engagement at all (kept at rate w, so they stand for n_n / w stream rows).
    """
    labels = _labels(labels_sampled)
    w = float(_rates(sample_rate))
    engaged = labels.any(axis=1)
    n_none = float((~engaged).sum())
    n_other = ((~labels) & engaged[:, None]).sum(axis=0).astype(np.float64)
    denominator = n_other + n_none / w
    if np.any(denominator == 0):
        raise SchemaError("labels: a head has no negatives at all; cannot fit its sample rate")
    return n_other / denominator


def fit_effective_sample_rates(
    labels_sampled: ArrayLike, sample_rate: float
) -> NDArray[np.float64]:
    """Per-head effective rate w_t = (n_o + n_n) / (n_o + n_n / w) in (0, 1], shape [H]: the
    fraction of each head's negatives the sampling kept. Pass it to `calibrate` in place of w."""
    return effective_sample_rate(sample_rate, fit_other_engaged_share(labels_sampled, sample_rate))


def downsample_negatives(
    labels: ArrayLike, sample_rate: float, rng: np.random.Generator
) -> NDArray[np.bool_]:
    """The sampling these formulas invert: keep every row with any engagement and a fraction w
    of the rows with none. Returns the keep mask [N] for labels [N, H]."""
    engaged = _labels(labels).any(axis=1)
    w = float(_rates(sample_rate))
    return engaged | (rng.random(engaged.shape[0]) < w)
