"""`pinfeed data ingest-served`: served traffic and feedback become event-set partitions, so
`features build`, `features rewards`, the training sets and both trainers learn from served
traffic like from any other events (the loop).

What becomes what:
- a served item with at least one feedback event of a reward kind (impression, an engagement,
  hide: each says the pin was shown) -> one `impressions` row: event_ts = served_at,
  request_id, user_id, pin_id, position, cluster_id, query_pin_id, surface `homefeed`, the
  engagement flags and `hide` from its events no later than `window` after serving (as the
  realtime reward counts them), and the click dwell;
- a served item nobody reported shown -> no row (`not_shown` in the report);
- checkout / add_to_cart events -> `conversions` rows (user from the served item).

Dwell: a click's dwell is the largest `dwell_s` its click / long_click events carry; a
long_click event without one means at least the long-click threshold; a click posted without
any dwell is read as 0 s (no return time reported, so no long click is claimed; counted as
`clicks_without_dwell`). `long_click` is then derived from the dwell as for every event source.

Idempotent by construction: every run rebuilds the served partitions (`date=*/served.parquet`)
from the whole logs, so running it twice adds nothing and late feedback lands on its row. Every
row goes through the same validator as any other event source (`pinfeed.validate`); rows it
rejects are counted with their reasons. The report reconciles both logs: every served item is
an ingested impression, not shown, or rejected; every acknowledged event is ingested or
rejected with a reason.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinfeed.errors import ConfigError
from pinfeed.events import PARTITIONED, EventSetMeta, conform, read_event_meta
from pinfeed.schema import CONVERSION_KINDS, ENGAGEMENTS
from pinfeed.traffic.records import HIDE, REWARD_KINDS, FeedbackRecord, ServedItem
from pinfeed.validate import validate_table

SERVED_FILE = "served.parquet"
SURFACE = "homefeed"


@dataclass(frozen=True)
class IngestReport:
    """The reconciliation of one ingestion (see the module docstring)."""

    served_items: int
    ingested_impressions: int
    not_shown: int
    rejected_impressions: dict[str, int]
    feedback_events: int
    ingested_events: int
    rejected_events: dict[str, int]
    ingested_conversions: int
    clicks_without_dwell: int
    partitions: list[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        served = (
            self.ingested_impressions + self.not_shown + sum(self.rejected_impressions.values())
        )
        events = self.ingested_events + sum(self.rejected_events.values())
        return served == self.served_items and events == self.feedback_events

    def as_dict(self) -> dict[str, Any]:
        return {
            "served_items": self.served_items,
            "ingested_impressions": self.ingested_impressions,
            "not_shown": self.not_shown,
            "rejected_impressions": self.rejected_impressions,
            "feedback_events": self.feedback_events,
            "ingested_events": self.ingested_events,
            "rejected_events": self.rejected_events,
            "ingested_conversions": self.ingested_conversions,
            "clicks_without_dwell": self.clicks_without_dwell,
            "reconciles": self.reconciles,
        }


def _served_frame(items: list[ServedItem]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "request_id": np.array([i.request_id for i in items], np.int64),
            "pin_id": np.array([i.pin_id for i in items], np.int64),
            "user_id": pd.array([i.user_id for i in items], dtype="Int64"),
            "served_ts": pd.to_datetime([i.served_at for i in items], utc=True, format="ISO8601"),
            "position": np.array([i.position for i in items], np.int32),
            "cluster_id": pd.array([i.cluster_id for i in items], dtype="Int64"),
            "query_pin_id": pd.array([i.query_pin_id for i in items], dtype="Int64"),
        }
    )
    return frame.drop_duplicates(["request_id", "pin_id"]).reset_index(drop=True)


def _event_frame(records: list[FeedbackRecord]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": np.array([r.request_id for r in records], np.int64),
            "pin_id": np.array([r.pin_id for r in records], np.int64),
            "kind": [r.kind for r in records],
            "event_ts": pd.to_datetime([r.event_ts for r in records], utc=True, format="ISO8601"),
            "dwell_s": pd.array([r.dwell_s for r in records], dtype="Float64"),
        }
    )


def _impression_rows(
    served: pd.DataFrame, events: pd.DataFrame, dwell: pd.Series, threshold_s: float
) -> tuple[pd.DataFrame, int]:
    """One row per shown served item (IMPRESSION_SCHEMA columns) and the number of clicks
    without a reported dwell. `events` are the matched, first-of-their-kind reward events,
    with `in_window`; `dwell` the largest timely click dwell per item."""
    shown = served.merge(events[["request_id", "pin_id"]].drop_duplicates(), how="inner")
    timely = events[events["in_window"]]
    flags = {}
    for kind in (*ENGAGEMENTS, HIDE):
        hit = timely.loc[timely["kind"] == kind, ["request_id", "pin_id"]].assign(**{kind: True})
        shown = shown.merge(hit, how="left")
        flags[kind] = shown[kind].notna().to_numpy()
    shown = shown.merge(
        dwell.rename("dwell_max"), left_on=["request_id", "pin_id"], right_index=True, how="left"
    )
    click = flags["click"] | flags["long_click"]
    reported = shown["dwell_max"].to_numpy(np.float64, na_value=np.nan)
    no_dwell = click & np.isnan(reported)
    reported = np.where(no_dwell & flags["long_click"], threshold_s, reported)
    reported = np.where(np.isnan(reported) & click, 0.0, reported)
    rows = pd.DataFrame(
        {
            "event_ts": shown["served_ts"],
            "request_id": shown["request_id"],
            "user_id": shown["user_id"],
            "pin_id": shown["pin_id"],
            "surface": SURFACE,
            "query_pin_id": shown["query_pin_id"],
            "cluster_id": shown["cluster_id"],
            "position": shown["position"],
            "closeup": flags["closeup"],
            "save": flags["save"],
            "click": click,
            "long_click": click & (reported >= threshold_s),
            "click_dwell_s": pd.array(np.where(click, reported, np.nan), dtype="Float32"),
            "hide": flags[HIDE],
        }
    )
    return rows, int((no_dwell & ~flags["long_click"]).sum())


def _classify(
    events: pd.DataFrame, served: pd.DataFrame, window: timedelta
) -> tuple[pd.DataFrame, pd.Series, Counter[str]]:
    """The events that can enter rows (matched, first of their item and kind), with
    `in_window` and `counted`; the largest timely click dwell per item (over every click and
    long_click event, duplicates included: a client may post the click, then its dwell); and
    the rejected events counted by reason."""
    rejected: Counter[str] = Counter()
    joined = events.merge(
        served[["request_id", "pin_id", "user_id", "served_ts"]], how="left", indicator=True
    )
    matched = joined["_merge"] == "both"
    rejected["no served item"] += int((~matched).sum())
    joined = joined[matched].drop(columns="_merge")
    late = joined["event_ts"] - joined["served_ts"] > pd.Timedelta(window)
    clicks = joined[joined["kind"].isin(("click", "long_click")) & ~late]
    dwell = clicks.groupby(["request_id", "pin_id"])["dwell_s"].max()
    duplicate = joined.duplicated(["request_id", "pin_id", "kind"])
    rejected["duplicate of an earlier event of the same item and kind"] += int(duplicate.sum())
    joined, late = joined[~duplicate].copy(), late[~duplicate]
    late_engagement = late & ~joined["kind"].isin(("impression", *CONVERSION_KINDS))
    rejected[f"later than the {window} window (the item still counts as shown)"] += int(
        late_engagement.sum()
    )
    joined["in_window"] = ~late
    joined["counted"] = ~late_engagement
    return joined, dwell, rejected


def _conversion_rows(events: pd.DataFrame) -> pd.DataFrame:
    hits = events[events["kind"].isin(CONVERSION_KINDS)]  # user_id: nullable Int64, all set
    return pd.DataFrame(
        {
            "event_ts": hits["event_ts"],
            "user_id": hits["user_id"].astype(np.int64),
            "pin_id": hits["pin_id"],
            "kind": hits["kind"],
            "request_id": hits["request_id"],
        }
    )


def _valid(
    name: str, rows: pd.DataFrame, meta: EventSetMeta, users: pa.Array, pins: pa.Array
) -> tuple[pa.Table, Counter[str]]:
    table = conform(pa.Table.from_pandas(rows, preserve_index=False), name)
    report = validate_table(
        name,
        table,
        long_click_threshold_s=meta.long_click_threshold_s if name == "impressions" else None,
        user_ids=users,
        pin_ids=pins,
    )
    reasons = Counter(f"{column}: {why}" for _, column, why in report.problems)
    return table.filter(pa.array(~report.bad)), reasons


def _write_partitions(events_dir: Path, name: str, table: pa.Table) -> list[str]:
    """Replace every served partition file of table `name` with `table`'s rows by date."""
    for old in (events_dir / name).glob(f"date=*/{SERVED_FILE}"):
        old.unlink()
    if table.num_rows == 0:
        return []
    dates = pc.strftime(table.column("event_ts"), format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    written = []
    for date in sorted(set(dates)):
        folder = events_dir / name / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{SERVED_FILE}.tmp"
        pq.write_table(table.filter(pa.array(dates == date)), tmp)
        os.replace(tmp, folder / SERVED_FILE)
        written.append(str((folder / SERVED_FILE).relative_to(events_dir)))
    return written


def _dates(table: pa.Table) -> set[str]:
    return set(pc.strftime(table.column("event_ts"), format="%Y-%m-%d").to_pylist())


def _existing_dates(events_dir: Path) -> set[str]:
    """Dates that hold served partitions from an earlier ingestion."""
    return {
        path.parent.name.removeprefix("date=")
        for name in PARTITIONED
        for path in (events_dir / name).glob(f"date=*/{SERVED_FILE}")
    }


def _ingested(events: pd.DataFrame, impressions: pa.Table, conversions: pa.Table) -> np.ndarray:
    """[E] bool: the event is on a written row (a counted reward event whose item's impression
    row was written, or a conversion that was written)."""
    written = set(
        zip(impressions["request_id"].to_pylist(), impressions["pin_id"].to_pylist(), strict=True)
    )
    keys = zip(events["request_id"], events["pin_id"], strict=True)
    on_row = np.array([key in written for key in keys], bool)
    reward = events["kind"].isin(REWARD_KINDS).to_numpy() & events["counted"].to_numpy(bool)
    converted = set(
        zip(
            conversions["request_id"].to_pylist(),
            conversions["pin_id"].to_pylist(),
            conversions["kind"].to_pylist(),
            strict=True,
        )
    )
    triples = zip(events["request_id"], events["pin_id"], events["kind"], strict=True)
    return (reward & on_row) | np.array([t in converted for t in triples], bool)


def ingest_served(
    events_dir: Path,
    served_items: list[ServedItem],
    feedback: list[FeedbackRecord],
    *,
    window: timedelta,
    replace: bool = False,
) -> IngestReport:
    """Rebuild the served partitions of the event set at `events_dir` from the two logs.

    Refuses (ConfigError) when the logs hold no traffic for a date an earlier ingestion wrote
    (the wrong state folder or Redis, or a trimmed log), unless `replace`.
    """
    meta = read_event_meta(events_dir)
    users = pc.unique(pq.read_table(events_dir / "users.parquet", columns=["user_id"])["user_id"])
    pins = pc.unique(pq.read_table(events_dir / "pins.parquet", columns=["pin_id"])["pin_id"])
    served = _served_frame(served_items)
    events, dwell, rejected = _classify(_event_frame(feedback), served, window)
    reward_events = events[events["kind"].isin(REWARD_KINDS)]
    rows, no_dwell = _impression_rows(served, reward_events, dwell, meta.long_click_threshold_s)
    impressions, bad_rows = _valid("impressions", rows, meta, users, pins)
    conversions, bad_conversions = _valid(
        "conversions", _conversion_rows(events), meta, users, pins
    )
    lost = _existing_dates(events_dir) - _dates(impressions) - _dates(conversions)
    if lost and not replace:
        raise ConfigError(
            f"ingesting these logs would remove the served traffic of {sorted(lost)} ingested "
            "before: they hold none for those dates (the wrong state folder or REDIS_URL, or a "
            "trimmed log?); pass --replace to rebuild from these logs alone"
        )
    ingested = _ingested(events, impressions, conversions)
    row_rejected = events["kind"].isin(REWARD_KINDS).to_numpy() & events["counted"].to_numpy(bool)
    rejected["its impression row was rejected by validation"] += int(
        (row_rejected & ~ingested).sum()
    )
    rejected.update({f"conversion row: {reason}": n for reason, n in bad_conversions.items()})
    rejected_items = dict(bad_rows)
    if len(served_items) > len(served):
        rejected_items["replayed request id (first answer kept)"] = len(served_items) - len(served)
    partitions = _write_partitions(events_dir, "impressions", impressions)
    partitions += _write_partitions(events_dir, "conversions", conversions)
    report = IngestReport(
        served_items=len(served_items),
        ingested_impressions=impressions.num_rows,
        not_shown=len(served) - len(rows),
        rejected_impressions=rejected_items,
        feedback_events=len(feedback),
        ingested_events=int(ingested.sum()),
        rejected_events={k: v for k, v in rejected.items() if v},
        ingested_conversions=conversions.num_rows,
        clicks_without_dwell=no_dwell,
        partitions=partitions,
    )
    _extend_meta(events_dir, meta, impressions, report)
    return report


def _extend_meta(
    events_dir: Path, meta: EventSetMeta, impressions: pa.Table, report: IngestReport
) -> None:
    """The event set's period grows to cover the served rows; the report is kept as provenance."""
    end = meta.end
    if impressions.num_rows:
        last = pc.max(impressions.column("event_ts")).as_py()
        end = max(end, last + timedelta(microseconds=1))
    details = {**meta.details, "served_traffic": report.as_dict()}
    updated = meta.model_copy(update={"end": end, "details": details})
    tmp = events_dir / ".meta.json.tmp"
    tmp.write_text(updated.model_dump_json(indent=2))
    os.replace(tmp, events_dir / "meta.json")
