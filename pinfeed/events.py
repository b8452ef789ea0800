"""Reading and writing event sets (the folder layout described in `pinfeed.schema`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from pinfeed.config import validate_model
from pinfeed.errors import DataNotFoundError, SchemaError
from pinfeed.schema import SCHEMAS

PARTITIONED = ("impressions", "conversions")
ADDED_LATER = {"impressions": ("hide",)}
"""Nullable columns that older event sets lack; read as null there."""
CANONICAL_ORDER = {
    "impressions": [
        ("event_ts", "ascending"),
        ("request_id", "ascending"),
        ("position", "ascending"),
    ],
    "conversions": [("event_ts", "ascending"), ("user_id", "ascending"), ("pin_id", "ascending")],
}
"""Row order of read-back event tables: a dataset scan yields fragments in no promised order,
and seeded steps downstream (negative downsampling) must see the same rows in the same order."""


class EventSetMeta(BaseModel):
    """What a consumer must know about an event set besides its rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["synthetic", "import"]
    start: datetime
    end: datetime
    long_click_threshold_s: float
    embedding_dim: int
    has_impressions: bool = True
    """False for implicit-feedback imports, where engaged rows stand for impressions."""
    details: dict = {}
    """Free-form provenance: generator config and seed, importer input file, id maps."""


@dataclass(frozen=True)
class EventSet:
    """The four event tables plus their metadata, all conforming to `pinfeed.schema`."""

    impressions: pa.Table
    conversions: pa.Table
    users: pa.Table
    pins: pa.Table
    meta: EventSetMeta

    def table(self, name: str) -> pa.Table:
        return getattr(self, name)


def conform(table: pa.Table, name: str) -> pa.Table:
    """Select and cast `table`'s columns to the contract of `name`; raise naming what differs.
    A column added to the contract later (`ADDED_LATER`) reads as all null where missing (an
    event set written before it, a source that does not log it)."""
    schema = SCHEMAS[name]
    optional = ADDED_LATER.get(name, ())
    missing = [
        f.name for f in schema if f.name not in table.column_names and f.name not in optional
    ]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}; expected {schema.names}")
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{name}.{field.name}: cannot read {column.type} as {field.type}: {exc}"
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


def write_event_set(events: EventSet, out: Path) -> Path:
    """Write `events` under `out` (replacing what was there): date-partitioned event tables,
    entity tables as single files, and meta.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in PARTITIONED:
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        table = conform(events.table(name), name)
        if table.num_rows == 0:
            # write_dataset writes no file for no rows; an empty file keeps the table readable
            # (an implicit-feedback log has no conversions).
            target.mkdir(parents=True)
            pq.write_table(table, target / "empty.parquet")
            continue
        dates = pc.strftime(table.column("event_ts"), format="%Y-%m-%d")
        ds.write_dataset(
            table.append_column("date", dates),
            target,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
            existing_data_behavior="delete_matching",
            max_rows_per_group=1 << 20,
        )
    for name in ("users", "pins"):
        pq.write_table(conform(events.table(name), name), out / f"{name}.parquet")
    (out / "meta.json").write_text(events.meta.model_dump_json(indent=2))
    return out


def read_event_meta(path: Path) -> EventSetMeta:
    """The metadata of the event set at `path` (cheap: no table is read)."""
    path = Path(path)
    if not (path / "meta.json").exists():
        raise DataNotFoundError(
            f"no event set at {path} (meta.json missing): run `pinfeed data generate --out {path}`"
            " or `pinfeed data import --out ...` first"
        )
    try:
        raw = json.loads((path / "meta.json").read_text())
    except json.JSONDecodeError as error:
        raise SchemaError(f"{path / 'meta.json'}: not valid JSON ({error})") from None
    return validate_model(EventSetMeta, raw, str(path / "meta.json"))


def describe_event_set(events: Path) -> str:
    """One line on an event set, for report pages: source, period and, for a synthetic set,
    its sizes, generator seed and skew knobs (docs/data.md)."""
    if not (events / "meta.json").is_file():
        return "Event set: not found."
    meta = read_event_meta(events)
    period = f"{meta.start:%Y-%m-%d} to {meta.end:%Y-%m-%d}"
    generator = meta.details.get("generator")
    if meta.source != "synthetic" or not generator:
        return f"Event set: {meta.source}, {period}."
    sizes = ", ".join(f"{generator[k]:,} {k}" for k in ("users", "pins", "topics"))
    skew = [
        f"{label} {value:g}"
        for label, value in (
            ("pin popularity log-sd", generator.get("pin_popularity_sigma")),
            ("user activity log-sd", generator.get("user_activity_sigma")),
            ("same-topic share", (generator.get("policy") or {}).get("same_topic_share")),
        )
        if value is not None
    ]
    knobs = f" ({', '.join(skew)})" if skew else ""
    return f"Event set: synthetic, {sizes}, {period}, generator seed {generator['seed']}{knobs}."


def read_event_set(path: Path) -> EventSet:
    """Read an event set written by `write_event_set` (the generator or the importer)."""
    path = Path(path)
    meta = read_event_meta(path)
    tables = {}
    for name in PARTITIONED:
        # The contract's schema, not the first file's: a file written before a column was added
        # reads it as null, and a later file's values of it are kept.
        dataset = ds.dataset(
            path / name, format="parquet", partitioning="hive", schema=SCHEMAS[name]
        )
        table = conform(dataset.to_table(), name)
        tables[name] = table.sort_by(CANONICAL_ORDER[name])
    for name in ("users", "pins"):
        tables[name] = conform(pq.read_table(path / f"{name}.parquet"), name)
    return EventSet(meta=meta, **tables)
