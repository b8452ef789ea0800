"""`build_features`: every table of `feature_repo.tables.TABLES` from one event set, written
as `<out>/<name>.parquet` with exactly the contract's schema."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from feature_repo.pipeline.cluster_runs import run_clusters, run_times
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.dwell import build_dwell
from feature_repo.pipeline.pin_features import build_pin_content, build_pin_features
from feature_repo.pipeline.snapshots import Calendar, datetime_us, ts_us
from feature_repo.pipeline.user_features import build_user_features
from feature_repo.tables import CLUSTER_MEMBERS, TABLES
from pinfeed.errors import DataNotFoundError, SchemaError
from pinfeed.events import EventSet


@dataclass(frozen=True)
class FeatureBuildResult:
    """What a build wrote: rows per table and wall seconds per stage."""

    out: Path
    rows: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)


def event_calendar(events: EventSet) -> tuple[Calendar, int, int]:
    """(day grid, start_us, end_us) covering the meta period and every event in it."""
    start_us, end_us = datetime_us(events.meta.start), datetime_us(events.meta.end)
    for table in (events.impressions, events.conversions):
        if table.num_rows:
            moments = ts_us(table.column("event_ts"))
            start_us, end_us = (
                min(start_us, int(moments.min())),
                max(end_us, int(moments.max()) + 1),
            )
    return Calendar.cover(start_us, end_us), start_us, end_us


def read_previous_members(previous: Path) -> pd.DataFrame:
    """cluster_members of an earlier build, the basis of stable cluster ids."""
    path = Path(previous) / "cluster_members.parquet"
    if not path.exists():
        raise DataNotFoundError(
            f"previous={previous} holds no cluster_members.parquet: pass the features folder of "
            "an earlier `pinfeed features build`, or no previous to start fresh ids"
        )
    table = pq.read_table(path)
    missing = [name for name in CLUSTER_MEMBERS.names if name not in table.column_names]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; expected {CLUSTER_MEMBERS.names}")
    return table.select(CLUSTER_MEMBERS.names).to_pandas().astype(np.int64)


def write_table(table: pa.Table, out: Path, name: str) -> None:
    """Write atomically (a reader never sees half a file) after checking the contract."""
    if table.schema != TABLES[name]:
        raise SchemaError(f"{name}: built schema {table.schema} differs from the contract")
    partial = out / f".{name}.parquet.partial"
    pq.write_table(table, partial)
    partial.replace(out / f"{name}.parquet")


def build_features(
    events: EventSet,
    out: Path,
    *,
    config: FeatureConfig | None = None,
    previous: Path | None = None,
    progress: bool = True,
) -> FeatureBuildResult:
    """Compute and write every feature table of `events` under `out`.

    previous: an earlier features folder whose cluster_members keeps cluster ids stable;
    default `out` itself when it already holds one.
    """
    config = config or FeatureConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if previous is None and (out / "cluster_members.parquet").exists():
        previous = out
    previous_members = read_previous_members(previous) if previous is not None else None
    calendar, start_us, end_us = event_calendar(events)
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        seconds[name] = time.perf_counter() - began

    tables: dict[str, Callable[[], pa.Table]] = {
        "pin_content": lambda: build_pin_content(events),
        "user_features": lambda: build_user_features(events, calendar, config),
        "pin_features": lambda: build_pin_features(events, calendar, config),
        "user_dwell": lambda: build_dwell(events, "user", calendar, config),
        "pin_dwell": lambda: build_dwell(events, "pin", calendar, config),
    }
    for name, build in tqdm(tables.items(), desc="feature tables", disable=not progress):
        with stage(name):
            table = build()
            write_table(table, out, name)
        rows[name] = table.num_rows
    times = run_times(start_us, end_us, config.cluster_cadence_days)
    clustered = run_clusters(events, times, previous_members, config, progress)
    seconds.update(clustered.seconds)
    for name in ("user_clusters", "cluster_members", "cluster_reward"):
        table = getattr(clustered, name)
        write_table(table, out, name)
        rows[name] = table.num_rows
    return FeatureBuildResult(out=out, rows=rows, seconds=seconds)
