"""Daily windowed aggregates: the engine under every snapshot table.

Events are summed per (entity, day); a dense block of entities x days x columns is then turned
into trailing-window sums with one cumulative sum, a block of entities at a time so memory stays
bounded (`FeatureConfig.chunk_cells`).

Point in time: snapshot day d covers the events of days d-W+1 .. d and is stamped at the start
of day d+1 (00:00 UTC), so a value stamped at T uses only events with event_ts < T.

Rows are kept only where the widest window holds any activity, plus one closing row on the
first day it becomes empty: without that row a point-in-time join would keep serving the last
non-empty window forever (until the Feast TTL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinfeed.errors import SchemaError

DAY_US = 86_400_000_000
"""Microseconds per day: timestamps travel as int64 microseconds since the epoch (UTC)."""


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ts_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch, shape [n]."""
    return pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()


def datetime_us(moment: datetime) -> int:
    """A datetime (naive ones are read as UTC) as int64 microseconds since the epoch."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def run_starts(values: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values begins in a grouped array [n] -> [runs] int64."""
    if len(values) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]])


def us_datetime(moment_us: int) -> datetime:
    """int64 microseconds since the epoch as an aware UTC datetime (exact)."""
    return EPOCH + timedelta(microseconds=int(moment_us))


@dataclass(frozen=True)
class Calendar:
    """The day grid of a build: day 0 starts at `day0_us` (a UTC midnight), `n_days` days."""

    day0_us: int
    n_days: int

    @classmethod
    def cover(cls, start_us: int, end_us: int) -> Calendar:
        """The whole days that cover [start_us, end_us)."""
        day0 = (start_us // DAY_US) * DAY_US
        n_days = max(1, -(-(end_us - day0) // DAY_US))
        return cls(day0_us=day0, n_days=int(n_days))

    def day_of(self, moments_us: np.ndarray) -> np.ndarray:
        """Day index of each timestamp, shape [n] int64 (may fall outside [0, n_days))."""
        return (moments_us - self.day0_us) // DAY_US

    def stamp_us(self, days: np.ndarray) -> np.ndarray:
        """Snapshot stamp of day d: 00:00 UTC of day d+1, shape [n] int64 microseconds."""
        return self.day0_us + (days.astype(np.int64) + 1) * DAY_US


@dataclass(frozen=True)
class DailySums:
    """Per (key, day) column sums; (key, day) pairs are unique, sorted by key then day."""

    keys: np.ndarray  # [n] int64
    days: np.ndarray  # [n] int64
    values: np.ndarray  # [n, C] float64


def _column_sums(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """Sum rows of `values` [n, C] into `length` groups given by `index` [n] -> [length, C]."""
    columns = [
        np.bincount(index, weights=values[:, c], minlength=length) for c in range(values.shape[1])
    ]
    return np.stack(columns, axis=1)


def daily_sums(keys: np.ndarray, days: np.ndarray, values: np.ndarray, n_days: int) -> DailySums:
    """Sum `values` [n, C] per (key, day); rows with a day outside [0, n_days) are dropped."""
    inside = (days >= 0) & (days < n_days)
    cell = keys[inside].astype(np.int64) * n_days + days[inside]
    cells, inverse = np.unique(cell, return_inverse=True)
    sums = _column_sums(inverse, values[inside], len(cells))
    return DailySums(keys=cells // n_days, days=cells % n_days, values=sums)


def day_totals(daily: DailySums, n_days: int) -> np.ndarray:
    """Column sums over all keys per day, shape [n_days, C]."""
    return _column_sums(daily.days, daily.values, n_days)


def trailing(series: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window sums along axis 1 of [K, D, C] (or axis 0 of [D, C]), same shape."""
    axis = 1 if series.ndim == 3 else 0
    padded = np.cumsum(series, axis=axis)
    shifted = np.zeros_like(padded)
    if window < series.shape[axis]:
        if axis == 1:
            shifted[:, window:] = padded[:, :-window]
        else:
            shifted[window:] = padded[:-window]
    return padded - shifted


@dataclass(frozen=True)
class WindowedSums:
    """Trailing-window sums at the kept (key, day) cells, one [m, C] array per window."""

    keys: np.ndarray  # [m] int64
    days: np.ndarray  # [m] int64
    sums: dict[int, np.ndarray]  # window days -> [m, C] float64


def _blocks(keys: np.ndarray, block_keys: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Blocks of `block_keys` distinct keys of a key-sorted array: (rows, dense key index per
    row [r], the block's distinct keys [k])."""
    starts = run_starts(keys)
    for first in range(0, len(starts), block_keys):
        block_starts = starts[first : first + block_keys]
        end = starts[first + block_keys] if first + block_keys < len(starts) else len(keys)
        rows = np.arange(block_starts[0], end)
        key_index = np.searchsorted(block_starts, rows, "right") - 1
        yield slice(block_starts[0], end), key_index, keys[block_starts]


def windowed_sums(
    daily: DailySums,
    n_days: int,
    windows: Sequence[int],
    activity: int,
    chunk_cells: int,
) -> WindowedSums:
    """Trailing sums of `daily` over each window, kept where column `activity` is non-zero in
    the widest window on that day or on the day before (the closing row)."""
    widest = max(windows)
    n_cols = daily.values.shape[1]
    block_keys = max(1, chunk_cells // (n_days * max(1, n_cols) * (len(windows) + 1)))
    keys, days, sums = [], [], {w: [] for w in windows}
    for rows_of_block, key_index, block_key_ids in _blocks(daily.keys, block_keys):
        dense = np.zeros((len(block_key_ids), n_days, n_cols))
        dense[key_index, daily.days[rows_of_block]] = daily.values[rows_of_block]
        by_window = {w: trailing(dense, w) for w in windows}
        active = by_window[widest][:, :, activity] > 0
        keep = active.copy()
        keep[:, 1:] |= active[:, :-1]
        rows, cols = np.nonzero(keep)
        keys.append(block_key_ids[rows])
        days.append(cols.astype(np.int64))
        for w in windows:
            sums[w].append(by_window[w][rows, cols])
    empty = np.zeros((0, n_cols))
    return WindowedSums(
        keys=np.concatenate(keys) if keys else np.zeros(0, np.int64),
        days=np.concatenate(days) if days else np.zeros(0, np.int64),
        sums={w: np.concatenate(parts) if parts else empty for w, parts in sums.items()},
    )


def smoothed_rate(
    count: np.ndarray, impressions: np.ndarray, prior: np.ndarray, weight: float
) -> np.ndarray:
    """`(count + prior * m) / (impressions + m)`; the prior alone where both are 0. Shape [m]."""
    denominator = impressions + weight
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (count + prior * weight) / safe, prior)


def prior_rates(
    totals: np.ndarray, count_cols: Sequence[int], base_col: int, window: int
) -> np.ndarray:
    """Global trailing-window rate per day of each count column over `base_col`, [n_days, K];
    0 on days whose window holds no base events yet."""
    window_totals = trailing(totals, window)
    base = window_totals[:, base_col : base_col + 1]
    safe = np.where(base > 0, base, 1.0)
    return np.where(base > 0, window_totals[:, list(count_cols)] / safe, 0.0)


def to_table(columns: dict[str, np.ndarray | pa.Array], schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema` (names, order, types) from numpy/arrow columns;
    timestamp columns may be given as int64 microseconds."""
    if list(columns) != schema.names:
        raise SchemaError(
            f"feature columns {list(columns)} differ from the contract {schema.names}"
        )
    arrays = []
    for field in schema:
        value = columns[field.name]
        if isinstance(value, np.ndarray) and pa.types.is_timestamp(field.type):
            arrays.append(pa.array(value.astype(np.int64), pa.int64()).cast(field.type))
        elif isinstance(value, np.ndarray):
            mask = np.isnan(value) if value.dtype.kind == "f" else None
            arrays.append(pa.array(value, mask=mask).cast(field.type))
        else:
            arrays.append(value.cast(field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
