"""What an event set looks like in a few numbers, to compare against public figures: engagement
rates per impression, click dwell quantiles, long-click share of clicks, conversion rate, and
how unequal the interactions are (`InteractionSkew`: item Gini, top-1% share, user activity)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from rich.table import Table

from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS


@dataclass(frozen=True)
class InteractionSkew:
    """How concentrated the interactions (clicks, saves, conversions) are, in the figures public
    logs publish (MovieLens' item Gini, user activity log-normal s; docs/data.md)."""

    interactions: int
    item_gini: float
    """Gini of interactions per pin, over pins with at least one (as MovieLens counts items)."""
    top1_share: float
    """Share of interactions on the top 1% of those pins."""
    user_log_sd: float
    """Standard deviation of log(interactions per user), over users with at least one."""
    user_median: float
    """Median interactions per user, over users with at least one."""

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs, appended to `EventSummary.rows`."""
        return [
            ("interactions (click, save, conversion)", f"{self.interactions:,}"),
            ("item Gini of interactions", f"{self.item_gini:.3f}"),
            ("top 1% of pins: share of interactions", f"{self.top1_share:.1%}"),
            (
                "user interactions: log-sd (median)",
                f"{self.user_log_sd:.2f} ({self.user_median:g})",
            ),
        ]


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 all equal, -> 1 all on one item."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float(2.0 * np.sum(np.arange(1, n + 1) * x) / (n * total) - (n + 1) / n)


def interaction_skew(user_id: np.ndarray, pin_id: np.ndarray) -> InteractionSkew:
    """`InteractionSkew` of interaction rows given as parallel user and pin id arrays."""
    if len(pin_id) == 0:
        return InteractionSkew(0, float("nan"), float("nan"), float("nan"), float("nan"))
    per_pin = np.sort(np.unique(pin_id, return_counts=True)[1])[::-1]
    top = max(1, int(np.ceil(0.01 * len(per_pin))))
    per_user = np.unique(user_id, return_counts=True)[1]
    return InteractionSkew(
        interactions=len(pin_id),
        item_gini=gini(per_pin),
        top1_share=float(per_pin[:top].sum() / per_pin.sum()),
        user_log_sd=float(np.log(per_user).std()),
        user_median=float(np.median(per_user)),
    )


def events_skew(events: EventSet) -> InteractionSkew:
    """`interaction_skew` of an event set's clicks, saves and conversion rows."""
    impressions = events.impressions
    engaged = pc.or_(impressions.column("click"), impressions.column("save"))
    rows = impressions.filter(engaged)
    columns = [rows, events.conversions]
    users = np.concatenate([t.column("user_id").to_numpy() for t in columns])
    pins = np.concatenate([t.column("pin_id").to_numpy() for t in columns])
    return interaction_skew(users, pins)


@dataclass(frozen=True)
class EventSummary:
    users: int
    active_users: int
    pins: int
    impressions: int
    requests: int
    rates: dict[str, float]
    """Engagements per impression, keyed by ENGAGEMENTS."""
    conversions: int
    conversion_rate: float
    """Conversion rows per impression."""
    dwell_quantiles_s: dict[str, float]
    """p10 / p50 / p90 of click_dwell_s (NaN without clicks)."""
    long_click_share: float
    """Long clicks per click."""
    skew: InteractionSkew

    def rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs in display order."""
        rows = [
            ("users (active)", f"{self.users:,} ({self.active_users:,})"),
            ("pins", f"{self.pins:,}"),
            ("requests", f"{self.requests:,}"),
            ("impressions", f"{self.impressions:,}"),
        ]
        rows += [(f"{name} rate", f"{rate:.3%}") for name, rate in self.rates.items()]
        rows += [(f"click dwell {q}", f"{v:.1f} s") for q, v in self.dwell_quantiles_s.items()]
        rows += [
            ("long-click share of clicks", f"{self.long_click_share:.1%}"),
            ("conversions", f"{self.conversions:,}"),
            ("conversion rate", f"{self.conversion_rate:.3%}"),
        ]
        return rows + self.skew.rows()

    def __rich__(self) -> Table:
        """Lets `rich.console.Console.print(summary)` render the table."""
        return summary_table(self)


def summarize(events: EventSet) -> EventSummary:
    impressions = events.impressions
    n = impressions.num_rows
    counts = {name: int(pc.sum(impressions.column(name)).as_py() or 0) for name in ENGAGEMENTS}
    dwell = pc.drop_null(impressions.column("click_dwell_s")).to_numpy()
    quantiles = (
        np.quantile(dwell.astype(np.float64), [0.1, 0.5, 0.9]) if len(dwell) else [np.nan] * 3
    )
    per = max(n, 1)
    return EventSummary(
        users=events.users.num_rows,
        active_users=len(pc.unique(impressions.column("user_id"))),
        pins=events.pins.num_rows,
        impressions=n,
        requests=len(pc.unique(impressions.column("request_id"))),
        rates={name: count / per for name, count in counts.items()},
        conversions=events.conversions.num_rows,
        conversion_rate=events.conversions.num_rows / per,
        dwell_quantiles_s=dict(zip(("p10", "p50", "p90"), map(float, quantiles), strict=True)),
        long_click_share=counts["long_click"] / max(counts["click"], 1),
        skew=events_skew(events),
    )


def summary_table(summary: EventSummary, title: str = "event set") -> Table:
    """A rich Table of `summary.rows()`, for the CLI."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    return table
