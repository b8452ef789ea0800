"""What an event set looks like in a few numbers, to compare against public figures: engagement
rates per impression, click dwell quantiles, long-click share of clicks, conversion rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from rich.table import Table

from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS


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
        return rows

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
    )


def summary_table(summary: EventSummary, title: str = "event set") -> Table:
    """A rich Table of `summary.rows()`, for the CLI."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    return table
