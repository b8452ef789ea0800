"""The synthetic generator's knobs: sizes, period, rates and the shapes of its distributions.

Every field is documented where it is declared; `docs/data.md` explains how they enter the
generative model. Presets (`GeneratorConfig.preset`) fix the sizes the CLI offers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pinfeed.errors import ConfigError

Preset = Literal["tiny", "small", "skewed", "medium"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetRates(_Frozen):
    """Mean engagement probability per impression that the generator calibrates to on the first
    day (intercepts solved so the day-0 mean hits the target; later days drift with interests and
    the logging policy)."""

    closeup: float = Field(0.045, gt=0, lt=1, description="closeup probability per impression")
    save: float = Field(0.010, gt=0, lt=1, description="save (repin) probability per impression")
    click: float = Field(0.030, gt=0, lt=1, description="click probability per impression")
    conversion: float = Field(
        0.002, gt=0, lt=1, description="conversion rows (add_to_cart + checkout) per impression"
    )


class EngagementShape(_Frozen):
    """Slopes of the logistic engagement model: logit p = b + slope * affinity - decay * log1p(pos)."""

    closeup_slope: float = Field(3.0, ge=0, description="closeup logit per unit of affinity")
    save_slope: float = Field(4.0, ge=0, description="save logit per unit of affinity")
    click_slope: float = Field(3.0, ge=0, description="click logit per unit of affinity")
    conversion_slope: float = Field(4.0, ge=0, description="conversion logit per unit of affinity")
    position_decay: float = Field(0.35, ge=0, description="logit lost per log1p(position)")
    clickbait_click_lift: float = Field(1.8, ge=0, description="extra click logit of clickbait")
    clickbait_conversion_factor: float = Field(
        0.05, ge=0, le=1, description="clickbait conversion probability multiplier"
    )
    off_interest_affinity: float = Field(
        0.1, ge=0, le=1, description="interest strength assumed for a topic the user lacks"
    )


class DwellShape(_Frozen):
    """Click dwell is lognormal: median * exp(slope * (affinity - 0.5)), log-sd sigma."""

    median_s: float = Field(18.0, gt=0, description="median dwell at affinity 0.5 (s)")
    sigma: float = Field(1.0, gt=0, description="log-space standard deviation")
    affinity_slope: float = Field(2.0, ge=0, description="log-median gained per unit affinity")
    clickbait_median_s: float = Field(4.0, gt=0, description="median dwell on clickbait (s)")
    clickbait_sigma: float = Field(0.7, gt=0, description="log-sd of clickbait dwell")


class ConversionShape(_Frozen):
    """Delayed conversions: an add_to_cart some hours after the click, sometimes a checkout."""

    checkout_share: float = Field(
        0.4, ge=0, le=1, description="share of add_to_cart events followed by a checkout"
    )
    delay_median_h: float = Field(8.0, gt=0, description="median click -> add_to_cart delay (h)")
    delay_sigma: float = Field(1.2, gt=0, description="log-sd of the delay")
    checkout_delay_median_h: float = Field(
        12.0, gt=0, description="median add_to_cart -> checkout delay (h)"
    )
    max_delay_days: float = Field(7.0, gt=0, description="delays are capped here (days)")


class LoggingPolicy(_Frozen):
    """How the simulated production system built each request (query pin, candidates, order)."""

    homefeed_share: float = Field(0.7, ge=0, le=1, description="share of homefeed requests")
    same_topic_share: float = Field(
        0.65, ge=0, le=1, description="homefeed candidates from the query pin's topic"
    )
    neighbour_topic_share: float = Field(
        0.15, ge=0, le=1, description="candidates from a sibling topic of the same category"
    )
    related_same_topic_share: float = Field(
        0.85, ge=0, le=1, description="related-surface candidates from the query pin's topic"
    )
    count_decay: float = Field(
        0.8, gt=0, le=1, description="daily decay of per-interest engagement counts"
    )
    count_prior: float = Field(1.0, gt=0, description="pseudo-count added to every known interest")
    history_size: int = Field(4, ge=1, description="recent engaged pins kept per interest")

    @model_validator(mode="after")
    def _shares(self) -> Self:
        if self.same_topic_share + self.neighbour_topic_share > 1:
            raise ValueError(
                "same_topic_share + neighbour_topic_share must be <= 1 (the rest is popular pins)"
            )
        if self.related_same_topic_share + self.neighbour_topic_share > 1:
            raise ValueError("related_same_topic_share + neighbour_topic_share must be <= 1")
        return self


def skewed_overrides() -> dict[str, object]:
    """The `skewed` preset's departures from the defaults: pin exposure and user activity as
    unequal as public interaction logs (docs/data.md, "How skewed the worlds are"), and more of
    the homefeed filled from corpus-wide popular pins (0.40 instead of 0.20)."""
    return {
        "pin_popularity_sigma": 2.5,
        "user_activity_sigma": 1.6,
        "policy": {"same_topic_share": 0.45},
    }


class GeneratorConfig(_Frozen):
    """Everything `generate` needs; the same config and seed give identical tables."""

    seed: int = Field(0, ge=0, description="root of every random stream")
    users: int = Field(3000, gt=0)
    pins: int = Field(8000, gt=0)
    topics: int = Field(60, ge=2, description="latent topics, grouped into categories")
    topics_per_category: int = Field(5, ge=2, description="siblings share a category")
    days: int = Field(14, gt=0)
    start: datetime = Field(datetime(2026, 10, 1, tzinfo=UTC), description="period start (UTC)")
    requests_per_user_day: float = Field(1.2, gt=0, description="mean requests per user per day")
    items_per_request: int = Field(10, ge=1, description="candidates shown per request")
    embedding_dim: int = Field(32, ge=2)
    embedding_noise: float = Field(0.35, ge=0, description="pin embedding noise around centroid")
    pin_popularity_sigma: float = Field(
        1.0, gt=0, description="log-sd of pin popularity: how unequally the policy exposes pins"
    )
    user_activity_sigma: float = Field(
        0.8, gt=0, description="log-sd of user activity: how unequally users send requests"
    )
    min_interests: int = Field(2, ge=1, description="fewest initial interests per user")
    max_interests: int = Field(4, ge=1, description="most initial interests per user")
    fading_share: float = Field(0.35, ge=0, le=1, description="users with one fading interest")
    new_interest_share: float = Field(0.35, ge=0, le=1, description="users with a new interest")
    clickbait_share: float = Field(0.05, ge=0, le=1, description="share of clickbait pins")
    shoppable_share: float = Field(0.3, ge=0, le=1, description="share of shoppable pins")
    long_click_threshold_s: float = Field(30.0, gt=0, description="click dwell for a long click")
    rates: TargetRates = TargetRates()
    engagement: EngagementShape = EngagementShape()
    dwell: DwellShape = DwellShape()
    conversions: ConversionShape = ConversionShape()
    policy: LoggingPolicy = LoggingPolicy()

    @field_validator("start")
    @classmethod
    def _aware(cls, start: datetime) -> datetime:
        if start.tzinfo is None:
            raise ValueError("start must carry a timezone, e.g. 2026-10-01T00:00Z")
        return start.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_interests > self.max_interests:
            raise ValueError("min_interests must be <= max_interests")
        if self.max_interests >= self.topics:
            raise ValueError("max_interests must be < topics")
        if self.topics % self.topics_per_category:
            raise ValueError("topics must be a multiple of topics_per_category")
        if self.pins < self.topics:
            raise ValueError("pins must be >= topics (every topic needs a pin)")
        return self

    @property
    def slots(self) -> int:
        """Interest slots per user: the initial interests plus one for a new interest."""
        return self.max_interests + 1

    @classmethod
    def preset(cls, name: str, seed: int = 0, **overrides: object) -> GeneratorConfig:
        """`tiny` (300 users, 7 days: a whole pipeline in a couple of minutes, for tests and a
        first look), `small` (3k users, 14 days, ~0.5M impressions), `skewed` (`small` with pin
        popularity and user activity as unequal as public logs, `skewed_overrides`) or
        `medium` (50k users, 100k pins, 30 days, ~10M impressions); `overrides` replace
        top-level fields."""
        presets: dict[str, dict[str, object]] = {
            "tiny": {"users": 300, "pins": 1200, "topics": 20, "days": 7},
            "small": {"users": 3000, "pins": 8000, "topics": 60, "days": 14},
            "skewed": {"users": 3000, "pins": 8000, "topics": 60, "days": 14, **skewed_overrides()},
            "medium": {
                "users": 50_000,
                "pins": 100_000,
                "topics": 200,
                "days": 30,
                "requests_per_user_day": 0.67,
            },
        }
        if name not in presets:
            raise ConfigError(f"preset: unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls.model_validate({**presets[name], "seed": seed, **overrides})
