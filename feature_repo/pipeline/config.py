"""Knobs of the offline feature pipeline, loaded once at the edge (CLI) and passed down."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SHORT_WINDOW_DAYS = 7
LONG_WINDOW_DAYS = 30
"""The snapshot windows. Not config: the feature names (`..._7d`, `..._30d`) carry them."""


class FeatureConfig(BaseModel):
    """How the feature tables, clusters and cluster rewards are computed.

    Rates are smoothed towards the global rate of the same window (computed from events before
    the snapshot only): `rate = (count + prior * m) / (impressions + m)` with
    `m = rate_prior_weight` pseudo-impressions, so an entity with three impressions gets a
    value near the global rate instead of 0 or 1.

    `cluster_distance_threshold` 0.75: on the generator's small preset, 99% of cluster members
    share their cluster's majority topic and users get about one cluster per engaged topic
    (0.45: 99.7% but 1.5x as many clusters as topics; 1.0: 97%; 1.5: 91%, topics merged).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_prior_weight: float = Field(20.0, ge=0, description="m: pseudo-impressions of the prior")
    short_click_s: float = Field(5.0, gt=0, description="a click with dwell below this is short")
    dwell_bins: int = Field(64, ge=4, le=512, description="log-dwell histogram bins (median)")
    dwell_min_s: float = Field(0.25, gt=0, description="lowest histogram edge above 0")
    dwell_max_s: float = Field(3600.0, gt=0, description="highest histogram edge")

    cluster_window_days: float = Field(30.0, gt=0, description="engaged pins looked back on")
    cluster_max_pins: int = Field(100, ge=1, le=1000, description="most recent pins per user")
    cluster_distance_threshold: float = Field(
        0.75, gt=0, description="Ward merge height (unit-norm embeddings) that ends merging"
    )
    cluster_max_count: int = Field(8, ge=1, description="most clusters per user")
    importance_half_life_days: float = Field(7.0, gt=0, description="action-count decay")
    cluster_cadence_days: int | None = Field(
        None,
        ge=1,
        description="None: one clustering run at the end of the events; N: also every N days "
        "before it, so point-in-time training sets see the clusters of their time",
    )
    match_jaccard: float = Field(
        0.3, gt=0, le=1, description="member overlap that keeps an old cluster id"
    )
    match_cosine: float = Field(
        0.9, gt=-1, le=1, description="centroid cosine that keeps an old cluster id"
    )

    reward_window_days: float = Field(30.0, gt=0, description="impressions a reward counts")
    reward_prior_weight: float = Field(10.0, ge=0, description="m: pseudo-impressions of r0")
    reward_fallback: float = Field(
        0.1, ge=0, le=1, description="reward when no impression at all is attributed"
    )
    hide_weight: int = Field(
        5, ge=0, description="unengaged impressions one hide counts as in a cluster's reward"
    )

    chunk_cells: int = Field(
        4_000_000, ge=1000, description="entity x day x column cells per dense window block"
    )
