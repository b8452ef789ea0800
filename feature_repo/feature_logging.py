"""Feast feature logging of what serving used: one logged row per served (ranked) candidate.

The `serving_v1` feature service carries a `LoggingConfig` (definitions.py) whose file
destination is `<home>/data/logs/serving_v1/`. Feast's Python SDK logs nothing by itself: the
caller builds an Arrow table in the schema Feast derives for the service
(`FeatureServiceLoggingSource.get_schema`) and hands it to `FeatureStore.write_logged_features`,
which on the DuckDB offline store writes one parquet file per call into that folder. Both are
wrapped here, so serving never builds Feast's log layout itself:

- `log_spec(store)`: the service's log schema, destination and sample rate, from the registry;
- `ServedRows` (`for_request` for one request of serving): what serving used, as numpy columns;
- `logged_table(spec, rows)`: those rows in Feast's schema (validated; names the bad field);
- `ServedRows.concat` / `alike`: many requests' rows as one, converted to Arrow in one go;
- `FeatureLogBuffer`: thread-safe `add`, one parquet file per `flush` (a file per request
  would leave thousands of tiny files), with deterministic per-request sampling;
- `read_logged(spec, since, until)`: the logged rows of a time range (the destination's files).

Log layout (Feast's): the join keys, per feature `view__feature` with `view__feature__timestamp`
(the value's event time, null when serving did not know it) and `view__feature__status` (Feast's
`FieldStatus`: PRESENT, NOT_FOUND for a value serving looked up and did not find, INVALID, i.e.
unset, for a feature serving did not log), then `__log_timestamp`, `__log_date` and
`__request_id` (a string in Feast's schema; pinfeed's integer request id as text).

Notation: R logged rows, K candidates of one request, D embedding width.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
from feast import FeatureService, FeatureStore
from feast.feature_logging import (
    LOG_DATE_FIELD,
    LOG_TIMESTAMP_FIELD,
    REQUEST_ID_FIELD,
    FeatureServiceLoggingSource,
)
from feast.infra.offline_stores.file_source import FileLoggingDestination
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from feature_repo.store import feature_service
from pinfeed.errors import ConfigError, SchemaError

LOGGED_SERVICE = "serving_v1"
TIMESTAMP_SUFFIX = "__timestamp"
STATUS_SUFFIX = "__status"
PRESENT = int(FieldStatus.PRESENT)
NOT_FOUND = int(FieldStatus.NOT_FOUND)
NOT_LOGGED = int(FieldStatus.INVALID)
"""Feast's "status unset": serving did not log this feature (not the same as a missing value)."""
_SYSTEM = (LOG_TIMESTAMP_FIELD, LOG_DATE_FIELD, REQUEST_ID_FIELD)
_HASH = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class LogSpec:
    """What the log of one feature service looks like and where it goes.

    `keys`: join keys in schema order; `features`: full names (`view__feature`) in the
    service's order; `schema`: Feast's log schema (keys, features with their timestamp and
    status columns, system columns).
    """

    service: FeatureService
    schema: pa.Schema
    keys: tuple[str, ...]
    features: tuple[str, ...]
    destination: Path
    sample_rate: float

    @functools.cached_property
    def types(self) -> dict[str, pa.DataType]:
        """Column name -> Arrow type (looked up per column on every logged batch)."""
        return {field.name: field.type for field in self.schema}


def log_spec(store: FeatureStore, service: str = LOGGED_SERVICE) -> LogSpec:
    """The registered service's log layout; ConfigError if it has no file logging config."""
    registered = feature_service(store, service)
    config = registered.logging_config
    if config is None or not isinstance(config.destination, FileLoggingDestination):
        raise ConfigError(
            f"feature service {service!r} has no file logging config: give it "
            "logging_config=LoggingConfig(destination=FileLoggingDestination(path=...)) in "
            "feature_repo/definitions.py and run `pinfeed features apply`"
        )
    if not 0.0 <= config.sample_rate <= 1.0:
        raise ConfigError(
            f"feature service {service!r}: logging sample_rate {config.sample_rate} must be in [0, 1]"
        )
    schema = FeatureServiceLoggingSource(registered, store.project).get_schema(store.registry)
    features = tuple(
        f"{projection.name_to_use()}__{feature.name}"
        for projection in registered.feature_view_projections
        for feature in projection.features
    )
    derived = {
        *_SYSTEM,
        *features,
        *(name + TIMESTAMP_SUFFIX for name in features),
        *(name + STATUS_SUFFIX for name in features),
    }
    keys = tuple(name for name in schema.names if name not in derived)
    return LogSpec(
        service=registered,
        schema=schema,
        keys=keys,
        features=features,
        destination=Path(config.destination.path),
        sample_rate=float(config.sample_rate),
    )


def sampled(request_id: int, sample_rate: float) -> bool:
    """Is request `request_id` logged? Deterministic per id (a multiplicative hash), so every
    row of a request, and every retry of it, gets the same answer; about `sample_rate` of ids
    are chosen whether ids are counters or random."""
    if sample_rate >= 1.0:
        return True
    if sample_rate <= 0.0:
        return False
    mixed = (request_id * _HASH) & _MASK
    return (mixed >> 11) / float(1 << 53) < sample_rate


@dataclass(frozen=True)
class ServedRows:
    """What serving used for R logged rows.

    request_ids: [R] integers. logged_at: one aware datetime for all rows, or [R]
    (`datetime64`, read as UTC, or aware datetimes). keys: join key -> [R] integers, negative:
    none (e.g. no query pin). features: full name -> [R] scalars (NaN or None: missing), an
    [R, D] array (every row present), or R values that may be lists (None: missing); a feature
    of the service that is absent here is logged as not logged. event_timestamps: full name ->
    one datetime or [R], the values' event times where serving knows them.
    """

    request_ids: Any
    logged_at: Any
    keys: Mapping[str, Any]
    features: Mapping[str, Any]
    event_timestamps: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def for_request(
        cls,
        request_id: int,
        logged_at: datetime,
        *,
        user_id: int,
        pin_ids: np.ndarray,
        query_pin_ids: np.ndarray,
        cluster_ids: np.ndarray,
        per_request: Mapping[str, Any],
        per_candidate: Mapping[str, Any],
    ) -> ServedRows:
        """One request of serving: K rows, one per ranked candidate.

        pin_ids, query_pin_ids, cluster_ids: [K] (-1: none). per_request: full name -> the
        request's one value (the user's features; a list for list features), repeated on every
        row. per_candidate: full name -> [K] or [K, D] (pin features from the pin cache, the
        query pin's content, the candidate's cluster reward).
        """
        k = len(pin_ids)
        repeated = {
            name: [value] * k if isinstance(value, list | tuple | np.ndarray) else np.full(k, value)
            for name, value in per_request.items()
            if value is not None
        }
        missing = {name: [None] * k for name, value in per_request.items() if value is None}
        both = repeated.keys() & per_candidate.keys()
        if both:
            raise SchemaError(
                f"feature log: {sorted(both)} given both per request and per candidate"
            )
        return cls(
            request_ids=np.full(k, request_id, dtype=np.int64),
            logged_at=logged_at,
            keys={
                "user_id": np.full(k, user_id, dtype=np.int64),
                "pin_id": pin_ids,
                "query_pin_id": query_pin_ids,
                "cluster_id": cluster_ids,
            },
            features={**repeated, **missing, **per_candidate},
        )

    @classmethod
    def concat(cls, parts: Sequence[ServedRows]) -> ServedRows:
        """The rows of `parts` as one, so a batch of requests is converted to Arrow once (the
        conversion's fixed cost per column is most of a one-request conversion). Every part must
        carry the same keys, features and event timestamps (`alike` groups them so)."""
        if not parts:
            raise SchemaError("feature log: nothing to concatenate")
        first = parts[0]
        if any(_layout(part) != _layout(first) for part in parts[1:]):
            raise SchemaError("feature log: rows to concatenate must log the same fields")
        sizes = [len(np.asarray(part.request_ids)) for part in parts]
        for part, n in zip(parts, sizes, strict=True):
            _check_lengths(part, n)
        return cls(
            request_ids=_joined([part.request_ids for part in parts]),
            logged_at=_joined(
                [_moments(part.logged_at, n) for part, n in zip(parts, sizes, strict=True)]
            ),
            keys={key: _joined([part.keys[key] for part in parts]) for key in first.keys},
            features={
                name: _joined([part.features[name] for part in parts]) for name in first.features
            },
            event_timestamps={
                name: _joined(
                    [
                        _moments(part.event_timestamps[name], n)
                        for part, n in zip(parts, sizes, strict=True)
                    ]
                )
                for name in first.event_timestamps
            },
        )


Layout = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def _layout(rows: ServedRows) -> Layout:
    """What `rows` logs: its keys, features and timed features (parts concatenate only alike)."""
    return (
        tuple(sorted(rows.keys)),
        tuple(sorted(rows.features)),
        tuple(sorted(rows.event_timestamps)),
    )


def alike(parts: Sequence[ServedRows]) -> list[list[ServedRows]]:
    """`parts` grouped by what they log, in first-seen order, each group fit for `concat` (in
    practice every request of serving logs the same fields: one group)."""
    grouped: dict[Layout, list[ServedRows]] = {}
    for part in parts:
        grouped.setdefault(_layout(part), []).append(part)
    return list(grouped.values())


def _check_lengths(rows: ServedRows, n: int) -> None:
    """Every column of one part has its `n` rows (in a concatenation, a column one short in
    one part and one long in the next would shift values across requests unnoticed)."""
    columns = {**rows.keys, **rows.features}
    columns |= {
        f"{name}{TIMESTAMP_SUFFIX}": stamps
        for name, stamps in rows.event_timestamps.items()
        if not isinstance(stamps, datetime)
    }
    if not isinstance(rows.logged_at, datetime):
        columns[LOG_TIMESTAMP_FIELD] = rows.logged_at
    for name, column in columns.items():
        if len(column) != n:
            raise SchemaError(f"feature log: {name!r} has {len(column)} value(s) for {n} row(s)")


def _moments(raw: Any, n: int) -> Any:
    """One aware datetime as [n] datetime64[us] (UTC); anything else as it is."""
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise SchemaError(f"feature log: {raw} has no time zone; pass aware UTC times")
        return np.full(n, np.datetime64(raw.astimezone(UTC).replace(tzinfo=None), "us"))
    return raw


def _joined(columns: list[Any]) -> Any:
    """One column from per-part columns: a numpy concatenation where every part is a numeric
    array of one kind and width, else a list of the values (`_values` reads both)."""
    arrays = all(isinstance(c, np.ndarray) and c.dtype != object for c in columns)
    if arrays and len({(c.dtype.kind, c.shape[1:]) for c in columns}) == 1:
        return np.concatenate(columns)
    return [value for column in columns for value in column]


def logged_table(spec: LogSpec, rows: ServedRows) -> pa.Table:
    """`rows` as an Arrow table in `spec.schema` (the table `write_logged_features` takes).

    Raises SchemaError naming the field for an unknown feature or key, a missing key, a column
    of the wrong length, or a value that does not fit the feature's type.
    """
    request_ids = np.asarray(rows.request_ids)
    if request_ids.ndim != 1:
        raise SchemaError(
            f"feature log: request_ids must be one id per row, got shape {request_ids.shape}"
        )
    n = len(request_ids)
    unknown = sorted(set(rows.features) - set(spec.features))
    if unknown:
        raise SchemaError(
            f"feature log: {unknown[0]!r} is not a feature of {spec.service.name} "
            f"(full names view__feature, e.g. {spec.features[0]!r})"
        )
    stray = sorted(set(rows.keys) - set(spec.keys))
    missing = [key for key in spec.keys if key not in rows.keys]
    if stray or missing:
        name = (stray or missing)[0]
        problem = "is not a join key of" if stray else "is missing; needed by"
        raise SchemaError(
            f"feature log: key {name!r} {problem} {spec.service.name} (keys: {list(spec.keys)})"
        )
    logged_at = _timestamps(rows.logged_at, n, LOG_TIMESTAMP_FIELD)
    columns: dict[str, pa.Array] = {}
    for key in spec.keys:
        ids = _length(np.asarray(rows.keys[key], dtype=np.int64), n, key)
        columns[key] = pa.array(ids, type=spec.types[key], mask=ids < 0)
    for name in spec.features:
        columns.update(_feature_columns(spec, name, rows, n))
    columns[LOG_TIMESTAMP_FIELD] = logged_at
    columns[LOG_DATE_FIELD] = logged_at.cast(pa.date32())
    columns[REQUEST_ID_FIELD] = pa.array(request_ids.astype(np.int64).astype(str), type=pa.string())
    return pa.Table.from_arrays([columns[name] for name in spec.schema.names], schema=spec.schema)


def _feature_columns(spec: LogSpec, name: str, rows: ServedRows, n: int) -> dict[str, pa.Array]:
    """The value, timestamp and status columns of feature `name`."""
    value_type = spec.types[name]
    stamp_type = spec.types[name + TIMESTAMP_SUFFIX]
    if name not in rows.features:
        return {
            name: pa.nulls(n, value_type),
            name + TIMESTAMP_SUFFIX: pa.nulls(n, stamp_type),
            name + STATUS_SUFFIX: pa.array(np.full(n, NOT_LOGGED, dtype=np.int32)),
        }
    values = _values(rows.features[name], value_type, n, name)
    stamps = rows.event_timestamps.get(name)
    stamp = (
        pa.nulls(n, stamp_type)
        if stamps is None
        else _timestamps(stamps, n, name + TIMESTAMP_SUFFIX).cast(stamp_type, safe=False)
    )
    status = (
        np.full(n, PRESENT, dtype=np.int32)
        if values.null_count == 0
        else np.where(np.asarray(values.is_valid()), PRESENT, NOT_FOUND).astype(np.int32)
    )
    return {name: values, name + TIMESTAMP_SUFFIX: stamp, name + STATUS_SUFFIX: pa.array(status)}


def _values(raw: Any, value_type: pa.DataType, n: int, name: str) -> pa.Array:
    try:
        if isinstance(raw, np.ndarray) and raw.ndim == 2 and pa.types.is_list(value_type):
            flat = pa.array(raw.reshape(-1), type=value_type.value_type)
            offsets = pa.array(np.arange(raw.shape[0] + 1, dtype=np.int32) * raw.shape[1])
            values = pa.ListArray.from_arrays(offsets, flat, type=value_type)
        elif isinstance(raw, np.ndarray) and raw.dtype != object:
            values = pa.array(raw, from_pandas=True).cast(value_type)
        else:
            values = pa.array(list(raw), type=value_type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
        raise SchemaError(
            f"feature log: {name!r} does not fit its type {value_type}: {error}"
        ) from error
    if len(values) != n:
        raise SchemaError(f"feature log: {name!r} has {len(values)} value(s) for {n} row(s)")
    return values


def _timestamps(raw: Any, n: int, name: str) -> pa.Array:
    """[n] timestamp[us, UTC] from one aware datetime, datetime64 values (UTC) or datetimes."""
    target = pa.timestamp("us", tz="UTC")
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise SchemaError(f"feature log: {name} {raw} has no time zone; pass aware UTC times")
        raw = np.full(n, np.datetime64(raw.astimezone(UTC).replace(tzinfo=None), "us"))
    if isinstance(raw, np.ndarray) and np.issubdtype(raw.dtype, np.datetime64):
        return pa.array(_length(raw.astype("datetime64[us]"), n, name)).cast(target)
    moments = list(raw)
    naive = [m for m in moments if isinstance(m, datetime) and m.tzinfo is None]
    if naive:
        raise SchemaError(f"feature log: {name} {naive[0]} has no time zone; pass aware UTC times")
    try:
        stamps = pa.array(
            [m.astimezone(UTC) if isinstance(m, datetime) else m for m in moments], type=target
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise SchemaError(
            f"feature log: {name} holds a value that is not a time: {error}"
        ) from error
    if len(stamps) != n:
        raise SchemaError(f"feature log: {name!r} has {len(stamps)} value(s) for {n} row(s)")
    return stamps


def _length(values: np.ndarray, n: int, name: str) -> np.ndarray:
    if values.ndim != 1 or len(values) != n:
        raise SchemaError(f"feature log: {name!r} has shape {values.shape}; expected [{n}]")
    return values


def write_logged(store: FeatureStore, spec: LogSpec, table: pa.Table) -> None:
    """Write `table` (from `logged_table`) through Feast: one parquet file in the destination."""
    if table.schema != spec.schema:
        raise SchemaError(
            f"feature log: the table does not have {spec.service.name}'s log schema; "
            "build it with logged_table"
        )
    if table.num_rows == 0:
        return
    spec.destination.mkdir(parents=True, exist_ok=True)
    store.write_logged_features(table, spec.service)


class FeatureLogBuffer:
    """Logged rows waiting to be written; `add` from the request path or a background thread,
    `flush` (one parquet file) from a background thread every few seconds or rows."""

    def __init__(self, store: FeatureStore, spec: LogSpec) -> None:
        self.store = store
        self.spec = spec
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._lock = threading.Lock()

    def wants(self, request_id: int) -> bool:
        """Is this request in the sample (`spec.sample_rate`)?"""
        return sampled(request_id, self.spec.sample_rate)

    @property
    def pending_rows(self) -> int:
        return self._rows

    def add(self, rows: ServedRows) -> None:
        """Convert and keep `rows` (SchemaError names a bad field at once)."""
        table = logged_table(self.spec, rows)
        with self._lock:
            self._tables.append(table)
            self._rows += table.num_rows

    def flush(self) -> int:
        """Write what is pending as one file; returns the number of rows written."""
        with self._lock:
            tables, self._tables, self._rows = self._tables, [], 0
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        write_logged(self.store, self.spec, table)
        return table.num_rows


def read_logged(
    spec: LogSpec, since: datetime | None = None, until: datetime | None = None
) -> pa.Table:
    """The logged rows with `since <= __log_timestamp < until` (either bound optional), in
    `spec.schema`; an empty table when nothing was logged yet."""
    files = sorted(spec.destination.glob("*.parquet")) if spec.destination.is_dir() else []
    if not files:
        return spec.schema.empty_table()
    dataset = ds.dataset([str(path) for path in files], format="parquet", schema=spec.schema)
    stamp = ds.field(LOG_TIMESTAMP_FIELD)
    condition = None
    for bound, op in ((since, "since"), (until, "until")):
        if bound is None:
            continue
        if bound.tzinfo is None:
            raise ConfigError(f"{op}: {bound} has no time zone; pass an aware UTC datetime")
        moment = pa.scalar(bound.astimezone(UTC), type=spec.schema.field(LOG_TIMESTAMP_FIELD).type)
        term = stamp >= moment if op == "since" else stamp < moment
        condition = term if condition is None else condition & term
    return dataset.to_table(filter=condition)
