"""How users react to an impression: affinity, closeup/save/click, and click dwell.

Affinity of user u for pin p at time t (in [0, 1]):

    affinity = quality_p * max(strength_u(topic_p, t), off_interest_affinity)

where strength_u(topic, t) is the user's interest strength in that topic, interpolated between
the period's start and end (fading and new interests move here), and 0 for a topic the user
lacks. Each engagement is an independent Bernoulli draw given affinity and position:

    logit p_e = b_e + slope_e * affinity - position_decay * log1p(position)  (+ clickbait lift
    for clicks)

The intercepts b_e are solved once, on the first day's impressions, so that the mean probability
matches `TargetRates` (`calibrate`); later days drift with interests and the logging policy.
Click dwell is lognormal: median_s * exp(affinity_slope * (affinity - 0.5)), log-sd sigma, and
for clickbait a short median (clickbait_median_s) independent of affinity. A long click is a
click with dwell >= long_click_threshold_s.

Notation: N impressions of one day, S interest slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.errors import ConfigError
from pinfeed.synthetic.config import GeneratorConfig
from pinfeed.synthetic.logging_policy import DayImpressions
from pinfeed.synthetic.world import World

BISECTION_STEPS = 60


@dataclass(frozen=True)
class Intercepts:
    """Logit intercepts b_e solved by `calibrate` (conversion: of p(conversion | click))."""

    closeup: float
    save: float
    click: float
    conversion: float


@dataclass(frozen=True)
class Reactions:
    """One day's sampled engagements, aligned with its DayImpressions [N]."""

    affinity: np.ndarray  # [N] float32
    slot: np.ndarray  # [N] int32 the user's interest slot of the pin's topic, -1 if none
    closeup: np.ndarray  # [N] bool
    save: np.ndarray  # [N] bool
    click: np.ndarray  # [N] bool
    long_click: np.ndarray  # [N] bool
    dwell_s: np.ndarray  # [N] float32, NaN where click is False
    p_click: np.ndarray  # [N] float32, the click probability (conversions build on it)

    @property
    def engaged(self) -> np.ndarray:
        """[N] bool: any engagement the logging policy learns from (closeup, save or click)."""
        return self.closeup | self.save | self.click


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def affinity(
    config: GeneratorConfig, world: World, day: DayImpressions, frac: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(affinity [N] float32, slot [N] int32) of each impression at period fraction `frac` [N]."""
    match = world.users.topics[day.user] == world.pins.topic[day.pin][:, None]
    strength = np.where(match, world.users.strength(day.user, frac), 0.0).max(axis=1)
    strength = np.maximum(strength, config.engagement.off_interest_affinity)
    slot = np.where(match.any(axis=1), match.argmax(axis=1), -1).astype(np.int32)
    return (world.pins.quality[day.pin] * strength).astype(np.float32), slot


def _logits(
    config: GeneratorConfig, world: World, day: DayImpressions, affinity_: np.ndarray
) -> dict[str, np.ndarray]:
    """Logits without intercept for closeup, save, click ([N] float64 each)."""
    shape = config.engagement
    position = shape.position_decay * np.log1p(day.position)
    lift = shape.clickbait_click_lift * world.pins.clickbait[day.pin]
    return {
        "closeup": shape.closeup_slope * affinity_ - position,
        "save": shape.save_slope * affinity_ - position,
        "click": shape.click_slope * affinity_ - position + lift,
    }


def solve_intercept(x: np.ndarray, target: float, weight: np.ndarray | None = None) -> float:
    """b with mean(weight * sigmoid(b + x)) == target (bisection; x, weight [N])."""
    w = np.ones_like(x) if weight is None else weight
    if not 0 < target < w.mean():
        raise ConfigError(f"rates: target {target:g} is unreachable (at most {w.mean():.4g})")
    low, high = -30.0, 30.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if np.mean(w * sigmoid(mid + x)) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def conversion_multiplier(config: GeneratorConfig, world: World, pin: np.ndarray) -> np.ndarray:
    """[N] factor on p(conversion | click): 0 off shoppable pins, small for clickbait."""
    factor = np.where(world.pins.clickbait[pin], config.engagement.clickbait_conversion_factor, 1)
    return world.pins.shoppable[pin] * factor


def calibrate(
    config: GeneratorConfig, world: World, day: DayImpressions, frac: np.ndarray
) -> Intercepts:
    """Intercepts that make day `day`'s mean probabilities match `config.rates`."""
    affinity_, _ = affinity(config, world, day, frac)
    logits = _logits(config, world, day, affinity_)
    rates = config.rates
    click = solve_intercept(logits["click"], rates.click)
    p_click = sigmoid(click + logits["click"])
    per_click = rates.conversion / (1.0 + config.conversions.checkout_share)
    conversion = solve_intercept(
        config.engagement.conversion_slope * affinity_,
        per_click,
        weight=p_click * conversion_multiplier(config, world, day.pin),
    )
    return Intercepts(
        closeup=solve_intercept(logits["closeup"], rates.closeup),
        save=solve_intercept(logits["save"], rates.save),
        click=click,
        conversion=conversion,
    )


def draw_dwell(
    config: GeneratorConfig,
    affinity_: np.ndarray,
    clickbait: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Click dwell in seconds [N] float32 for clicks with these affinities and clickbait flags."""
    dwell = config.dwell
    mu = np.where(
        clickbait,
        np.log(dwell.clickbait_median_s),
        np.log(dwell.median_s) + dwell.affinity_slope * (affinity_ - 0.5),
    )
    sigma = np.where(clickbait, dwell.clickbait_sigma, dwell.sigma)
    return np.exp(mu + sigma * rng.standard_normal(len(mu))).astype(np.float32)


def react(
    config: GeneratorConfig,
    world: World,
    day: DayImpressions,
    frac: np.ndarray,
    intercepts: Intercepts,
    rng: np.random.Generator,
) -> Reactions:
    """Sample every impression's closeup, save, click, dwell and long click."""
    affinity_, slot = affinity(config, world, day, frac)
    logits = _logits(config, world, day, affinity_)
    n = len(day.pin)
    closeup = rng.random(n) < sigmoid(intercepts.closeup + logits["closeup"])
    save = rng.random(n) < sigmoid(intercepts.save + logits["save"])
    p_click = sigmoid(intercepts.click + logits["click"])
    click = rng.random(n) < p_click
    dwell = np.full(n, np.nan, dtype=np.float32)
    dwell[click] = draw_dwell(config, affinity_[click], world.pins.clickbait[day.pin[click]], rng)
    long_click = click & (dwell.astype(np.float64) >= config.long_click_threshold_s)
    return Reactions(
        affinity=affinity_,
        slot=slot,
        closeup=closeup,
        save=save,
        click=click,
        long_click=long_click,
        dwell_s=dwell,
        p_click=p_click.astype(np.float32),
    )
