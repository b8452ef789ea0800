"""Training sets: labelled examples joined point-in-time with a feature service's features.

Both sets ask Feast for the same feature service that serving reads (`retrieval_v1`,
`ranking_v1`), through `get_historical_features`, so a training row carries the values the
online store held at the example's `event_timestamp` and nothing stamped later. Feature columns
use full names (`view__feature`); integer features come back nullable (null: no value within the
view's ttl at that time).

- Retrieval: one row per positive (a click, a save, a conversion). A conversion reads its
  features at the impression of the same request where the log has one (the moment the pin was
  recommended), and takes that impression's query pin; otherwise it reads them at the conversion
  and takes the user's latest engaged pin before it. `positive_ts` keeps when the positive
  happened.
- Ranking: impressions with the four labels, negative-downsampled: every impression with any
  engagement is kept, the rest with probability `negative_sample_rate` (seeded). `sample_rate`
  holds each row's keep probability, which calibration divides out.

Each set is one parquet file plus `<name>.json`; both record the feature service, its feature
list, the sample rate and the time range (the parquet in its schema metadata under
`pinfeed.training_set`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.store import feature_service, feature_types, service_feature_names
from pinfeed.errors import DataNotFoundError, SchemaError
from pinfeed.events import EventSet
from pinfeed.schema import ENGAGEMENTS

METADATA_KEY = b"pinfeed.training_set"
RETRIEVAL_NAME = "retrieval"
RANKING_NAME = "ranking"
ROW_COLUMN = "__pinfeed_row"
"""An example's position, carried through the join: Feast's Ray offline store floors
timestamps to whole seconds and returns rows in its own order."""
ENGAGED_FLAGS = ("closeup", "save", "click")
"""Flags that make a pin 'engaged' for the query-pin fallback (long_click implies click)."""


class TrainingSetConfig(BaseModel):
    """How training sets are drawn. Loaded once at the edge (CLI) and passed down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    negative_sample_rate: float = Field(0.1, gt=0.0, le=1.0)
    """w: the fraction of impressions without engagement kept in the ranking set."""
    seed: int = 0
    """Seeds the negative sampling, so a rebuild keeps the same rows."""
    retrieval_service: str = "retrieval_v1"
    ranking_service: str = "ranking_v1"
    max_rows_per_query: int = Field(500_000, gt=0)
    """Entity rows per get_historical_features call; the set is joined in time-ordered chunks
    of this size to bound memory."""


class TrainingSetMeta(BaseModel):
    """What the sidecar `<name>.json` and the parquet schema metadata hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["retrieval", "ranking"]
    feature_service: str
    features: list[str]
    """Full feature names (`view__feature`), in the service's order."""
    negative_sample_rate: float | None
    """None for retrieval (positives only)."""
    seed: int
    start: datetime | None
    end: datetime | None
    """Range of the rows' event_timestamp (None for an empty set)."""
    rows: int


def build_retrieval_set(
    store: FeatureStore, events: EventSet, out: Path, config: TrainingSetConfig
) -> Path:
    """Write `out/retrieval.parquet` (+ .json): the retrieval positives with retrieval_v1's
    features. Returns the parquet path."""
    examples = retrieval_examples(events)
    return _write_set(store, examples, out, config, RETRIEVAL_NAME, config.retrieval_service, None)


def build_ranking_set(
    store: FeatureStore, events: EventSet, out: Path, config: TrainingSetConfig
) -> Path:
    """Write `out/ranking.parquet` (+ .json): downsampled impressions with ranking_v1's
    features. Returns the parquet path."""
    examples = ranking_examples(events, config.negative_sample_rate, config.seed)
    return _write_set(
        store,
        examples,
        out,
        config,
        RANKING_NAME,
        config.ranking_service,
        config.negative_sample_rate,
    )


def retrieval_examples(events: EventSet) -> pd.DataFrame:
    """One row per positive: user_id, query_pin_id (nullable), pin_id, event_timestamp,
    positive_kind (conversion | click | save), click_dwell_s (clicks only), positive_ts."""
    impressions = events.impressions.to_pandas()
    impressions["query_pin_id"] = impressions["query_pin_id"].astype("Int64")
    keep = ["user_id", "pin_id", "query_pin_id", "event_ts", "click_dwell_s"]
    clicks = impressions.loc[impressions["click"], keep].assign(positive_kind="click")
    saves = impressions.loc[impressions["save"], keep].assign(positive_kind="save")
    frame = pd.concat([clicks, saves], ignore_index=True)
    frame["positive_ts"] = frame["event_ts"]
    frame = pd.concat([frame, _conversion_examples(events, impressions)], ignore_index=True)
    frame.loc[frame["positive_kind"] != "click", "click_dwell_s"] = np.nan
    frame = frame.rename(columns={"event_ts": "event_timestamp"})
    frame["query_pin_id"] = _fill_query_pins(frame, impressions)
    columns = [
        "user_id",
        "query_pin_id",
        "pin_id",
        "event_timestamp",
        "positive_kind",
        "click_dwell_s",
        "positive_ts",
    ]
    return frame[columns].sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def _conversion_examples(events: EventSet, impressions: pd.DataFrame) -> pd.DataFrame:
    """Conversions stamped at their request's impression of the same pin where one is logged."""
    conversions = events.conversions.to_pandas()
    shown = impressions[["request_id", "user_id", "pin_id", "query_pin_id", "event_ts"]]
    shown = shown.drop_duplicates(["request_id", "user_id", "pin_id"])
    joined = conversions.merge(
        shown.rename(columns={"event_ts": "shown_ts"}),
        on=["request_id", "user_id", "pin_id"],
        how="left",
    )
    return pd.DataFrame(
        {
            "user_id": joined["user_id"],
            "pin_id": joined["pin_id"],
            "query_pin_id": joined["query_pin_id"],
            "event_ts": joined["shown_ts"].fillna(joined["event_ts"]),
            "positive_kind": "conversion",
            "positive_ts": joined["event_ts"],
        }
    )


def _fill_query_pins(frame: pd.DataFrame, impressions: pd.DataFrame) -> pd.Series:
    """query_pin_id where known, else the user's latest engaged pin strictly before the row."""
    engaged = impressions.loc[impressions[list(ENGAGED_FLAGS)].any(axis=1)]
    history = (
        engaged[["user_id", "event_ts", "pin_id"]]
        .rename(columns={"event_ts": "event_timestamp", "pin_id": "latest_engaged_pin"})
        .sort_values("event_timestamp")
    )
    rows = frame[["user_id", "event_timestamp"]].reset_index().sort_values("event_timestamp")
    matched = pd.merge_asof(
        rows, history, on="event_timestamp", by="user_id", allow_exact_matches=False
    ).set_index("index")
    fallback = matched["latest_engaged_pin"].reindex(frame.index)
    return frame["query_pin_id"].astype("Int64").fillna(fallback.astype("Int64"))


def ranking_examples(events: EventSet, negative_sample_rate: float, seed: int) -> pd.DataFrame:
    """Impressions with the four labels: all engaged ones, and each other one with probability
    `negative_sample_rate` (numpy Generator seeded with `seed`). Adds `sample_rate`."""
    impressions = events.impressions.to_pandas()
    engaged = impressions[list(ENGAGEMENTS)].any(axis=1).to_numpy()
    draws = np.random.default_rng(seed).random(len(impressions))
    keep = engaged | (draws < negative_sample_rate)
    frame = impressions.loc[keep].rename(columns={"event_ts": "event_timestamp"})
    frame["sample_rate"] = np.where(engaged[keep], 1.0, negative_sample_rate)
    columns = [
        "request_id",
        "user_id",
        "pin_id",
        "query_pin_id",
        "cluster_id",
        "surface",
        "position",
        "event_timestamp",
        *ENGAGEMENTS,
        "click_dwell_s",
        "sample_rate",
    ]
    return frame[columns].sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def join_features(
    store: FeatureStore, examples: pd.DataFrame, service: str, max_rows_per_query: int
) -> pa.Table:
    """Point-in-time join of `service`'s features onto `examples` (an entity frame with
    `event_timestamp` and the service's join keys), in time-ordered chunks of at most
    `max_rows_per_query` rows. Rows come back in `examples`' time order (ties in its order),
    feature columns in their declared Feast types, whichever offline engine joined them."""
    service_object = feature_service(store, service)
    if ROW_COLUMN in examples.columns:
        raise SchemaError(f"examples: {ROW_COLUMN!r} is the join's own column; rename yours")
    ordered = examples.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    ordered[ROW_COLUMN] = np.arange(len(ordered), dtype=np.int64)
    parts = []
    for begin in range(0, max(len(ordered), 1), max_rows_per_query):
        chunk = ordered.iloc[begin : begin + max_rows_per_query]
        job = store.get_historical_features(
            entity_df=chunk, features=service_object, full_feature_names=True
        )
        parts.append(job.to_arrow())
    table = pa.concat_tables(parts, promote_options="permissive").sort_by(ROW_COLUMN)
    _check_every_row(table, len(ordered), store, service)
    # every example came back once, so row i is example i: its own timestamp goes back
    stamps = pa.Array.from_pandas(ordered["event_timestamp"])
    table = table.set_column(
        table.schema.get_field_index("event_timestamp"), "event_timestamp", stamps
    )
    table = _declared_types(table, _entity_types(ordered) | feature_types(store, service))
    return table.drop_columns(ROW_COLUMN)


def _check_every_row(table: pa.Table, expected: int, store: FeatureStore, service: str) -> None:
    """A join that lost examples would make a silently smaller (and biased) training set."""
    if (
        table.num_rows == expected
        and pc.count_distinct(table.column(ROW_COLUMN)).as_py() == expected
    ):
        return
    engine = store.config.offline_store.type
    known = (
        " Feast's Ray offline store drops examples that share a join key and a timestamp (to "
        "the second) with another, or hold a null join key (the bug feast-dev/feast#6787 "
        "reports for its Dask store); build this set with PINFEED_OFFLINE_ENGINE=local."
        if engine == "ray"
        else ""
    )
    raise SchemaError(
        f"point-in-time join of {service} on the {engine} offline store returned "
        f"{table.num_rows:,} rows for {expected:,} examples.{known}"
    )


def _entity_types(ordered: pd.DataFrame) -> dict[str, pa.DataType]:
    """The entity frame's own column types: a column the Ray store saw only nulls in comes
    back typed null, DuckDB keeps the frame's type."""
    schema = pa.Schema.from_pandas(ordered, preserve_index=False)
    return {field.name: field.type for field in schema if field.name != ROW_COLUMN}


def _declared_types(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Columns cast to `types`. DuckDB returns them so already; the Ray store goes through
    pandas (float32 -> float64, a nullable int -> float64 with NaN)."""
    for name, declared in types.items():
        index = table.schema.get_field_index(name)
        if index < 0:  # missing, or more than one column of that name
            raise SchemaError(f"point-in-time join: column {name!r} is missing or repeated")
        column = table.column(index)
        if column.type == declared:
            continue
        if pa.types.is_floating(column.type) and pa.types.is_integer(declared):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        table = table.set_column(index, name, column.cast(declared))
    return table


def _write_set(
    store: FeatureStore,
    examples: pd.DataFrame,
    out: Path,
    config: TrainingSetConfig,
    name: Literal["retrieval", "ranking"],
    service: str,
    negative_sample_rate: float | None,
) -> Path:
    if examples.empty:
        raise DataNotFoundError(
            f"{name} training set: the event set holds no {name} examples; "
            "generate or import events with engagements first"
        )
    table = join_features(store, examples, service, config.max_rows_per_query)
    timestamps = table.column("event_timestamp")
    meta = TrainingSetMeta(
        name=name,
        feature_service=service,
        features=list(service_feature_names(store, service)),
        negative_sample_rate=negative_sample_rate,
        seed=config.seed,
        start=pc.min(timestamps).as_py(),
        end=pc.max(timestamps).as_py(),
        rows=table.num_rows,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.parquet"
    metadata = {**(table.schema.metadata or {}), METADATA_KEY: meta.model_dump_json().encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    (out / f"{name}.json").write_text(meta.model_dump_json(indent=2))
    return path


def read_training_set_meta(path: Path) -> TrainingSetMeta:
    """The metadata recorded in a training set parquet file's schema."""
    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise DataNotFoundError(
            f"{path} carries no {METADATA_KEY.decode()} metadata: rebuild it with "
            "`pinfeed features training-sets`"
        )
    return TrainingSetMeta.model_validate(json.loads(metadata[METADATA_KEY]))
