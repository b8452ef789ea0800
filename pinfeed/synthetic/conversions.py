"""Delayed, sparse conversions that follow clicks.

A click on pin p converts with probability

    p(conversion | click) = shoppable_p * clickbait_factor_p * sigmoid(b + conversion_slope * affinity)

(`clickbait_factor` is clickbait_conversion_factor for clickbait pins, 1 otherwise; b is solved
by `engagement.calibrate` so conversion rows per impression match `rates.conversion`). A
conversion is an `add_to_cart` a lognormal delay after the click (median delay_median_h), and
with probability checkout_share a `checkout` a further lognormal delay later (median
checkout_delay_median_h); total delays are capped at max_delay_days. Each row carries the
request_id of the impression it follows. Conversions that would land after the period's end
are not logged (right-censoring, as in any real log cut at a date).

Notation: N impressions of one day, M conversions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.schema import CONVERSION_KINDS
from pinfeed.synthetic.config import GeneratorConfig
from pinfeed.synthetic.engagement import Intercepts, Reactions, conversion_multiplier, sigmoid
from pinfeed.synthetic.logging_policy import DayImpressions
from pinfeed.synthetic.world import World

CHECKOUT = CONVERSION_KINDS.index("checkout")
ADD_TO_CART = CONVERSION_KINDS.index("add_to_cart")
HOUR_US = 3_600_000_000
MIN_DELAY_H = 0.25


@dataclass(frozen=True)
class DayConversions:
    """Conversions caused by one day's clicks [M] (they may land on later days)."""

    ts_us: np.ndarray  # [M] int64
    user: np.ndarray  # [M] int32
    pin: np.ndarray  # [M] int32
    kind: np.ndarray  # [M] int8 index into CONVERSION_KINDS
    request_id: np.ndarray  # [M] int64


def _delay_us(median_h: float, sigma: float, size: int, rng: np.random.Generator) -> np.ndarray:
    hours = np.exp(np.log(median_h) + sigma * rng.standard_normal(size))
    return (np.maximum(hours, MIN_DELAY_H) * HOUR_US).astype(np.int64)


def convert(
    config: GeneratorConfig,
    world: World,
    day: DayImpressions,
    reactions: Reactions,
    request_id: np.ndarray,
    intercepts: Intercepts,
    end_us: int,
    rng: np.random.Generator,
) -> DayConversions:
    """Sample the conversions that follow this day's clicks (`request_id` [N] int64)."""
    shape = config.conversions
    clicked = np.flatnonzero(reactions.click)
    pin = day.pin[clicked]
    p = sigmoid(
        intercepts.conversion + config.engagement.conversion_slope * reactions.affinity[clicked]
    ) * conversion_multiplier(config, world, pin)
    source = clicked[rng.random(len(clicked)) < p]
    cap_us = int(shape.max_delay_days * 24 * HOUR_US)
    cart_delay = np.minimum(
        _delay_us(shape.delay_median_h, shape.delay_sigma, len(source), rng), cap_us
    )
    checkout = rng.random(len(source)) < shape.checkout_share
    checkout_delay = cart_delay[checkout] + _delay_us(
        shape.checkout_delay_median_h, shape.delay_sigma, int(checkout.sum()), rng
    )
    rows = np.concatenate([source, source[checkout]])
    delay = np.concatenate([cart_delay, np.minimum(checkout_delay, cap_us)])
    kind = np.concatenate(
        [
            np.full(len(source), ADD_TO_CART, np.int8),
            np.full(int(checkout.sum()), CHECKOUT, np.int8),
        ]
    )
    ts_us = day.ts_us[rows] + delay
    keep = ts_us < end_us
    rows = rows[keep]
    return DayConversions(
        ts_us=ts_us[keep],
        user=day.user[rows],
        pin=day.pin[rows],
        kind=kind[keep],
        request_id=request_id[rows],
    )
