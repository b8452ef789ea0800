"""Reading interaction logs (CSV or parquet) and parsing their timestamps.

Rows are numbered the way a person reading the file counts them: the first data row is row 1
and the header line is not counted, so row N sits on line N + 1 of a CSV (quoted values must not
span lines). Blank lines keep their number but are not rows: they are skipped, not rejected, and
not counted in rows_read. Parquet rows are numbered from 1 in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pinfeed.errors import SchemaError

REQUIRED = ("user_id", "item_id", "timestamp", "event")
OPTIONAL = ("dwell_s", "kind")
TEXT = pd.StringDtype("pyarrow")
"""Text columns stay Arrow-backed, so strip/lower/regex run in pyarrow.compute, not Python."""
ARROW_TYPES = {pa.string(): TEXT, pa.large_string(): TEXT}
EPOCH_MAX_S = 4_102_444_800
"""2100-01-01: a larger epoch is almost certainly milliseconds."""


@dataclass(frozen=True)
class RawLog:
    """The log as read: original columns (ids and text kept as read) and their row numbers.

    frame: [R rows, original columns]; row_number: [R] int64, 1-based, header not counted.
    malformed: CSV lines that did not split into the header's column count, (row_number, reason).
    """

    path: Path
    frame: pd.DataFrame
    row_number: np.ndarray
    malformed: pd.DataFrame

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.malformed)


@dataclass(frozen=True)
class Timestamps:
    """Parsed event times. us: [R] int64 microseconds since the epoch (0 where bad)."""

    us: np.ndarray
    missing: np.ndarray
    unparseable: np.ndarray
    out_of_range: np.ndarray


def read_log(path: Path) -> RawLog:
    """Read a CSV (optionally compressed, e.g. .csv.gz) or parquet interaction log."""
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"interaction log {path} does not exist")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        raw = _read_parquet(path)
    elif ".csv" in suffixes:
        raw = _read_csv(path)
    else:
        raise SchemaError(f"{path}: unknown log format; name it *.csv, *.csv.gz or *.parquet")
    missing = [c for c in REQUIRED if c not in raw.frame.columns]
    if missing:
        raise SchemaError(
            f"{path}: missing required column(s) {missing}; found {list(raw.frame.columns)}. "
            f"An interaction log needs {list(REQUIRED)} (optional: {list(OPTIONAL)})"
        )
    return raw


def _read_parquet(path: Path) -> RawLog:
    table = pq.read_table(path)
    for name in ("user_id", "item_id"):
        if name in table.column_names and pa.types.is_floating(table.schema.field(name).type):
            raise SchemaError(
                f"{path}: {name} is {table.schema.field(name).type}; write ids as int or string"
            )
    ints = {
        t: pd.Int64Dtype()
        for t in (
            pa.int8(),
            pa.int16(),
            pa.int32(),
            pa.int64(),
            pa.uint8(),
            pa.uint16(),
            pa.uint32(),
        )
    }
    frame = table.to_pandas(types_mapper=ints.get)
    return RawLog(path, frame, np.arange(1, len(frame) + 1, dtype=np.int64), _no_malformed())


def _read_csv(path: Path) -> RawLog:
    """Every known column is read as text so one bad value rejects one row, not the file.
    Single-threaded parsing keeps line numbers for the rows pyarrow cannot split."""
    skipped: list[tuple[int, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = -1 if row.number is None else row.number - 1
        if row.text.strip():
            why = f"expected {row.expected_columns} columns, got {row.actual_columns}: {row.text[:80]!r}"
        else:
            why = ""
        skipped.append((number, why))
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in REQUIRED + OPTIONAL},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise SchemaError(f"{path}: not a readable CSV: {exc}") from exc
    frame = table.to_pandas(types_mapper=ARROW_TYPES.get)
    numbers = np.array([n for n, _ in skipped], dtype=np.int64)
    all_rows = np.arange(1, len(frame) + len(skipped) + 1, dtype=np.int64)
    row_number = np.setdiff1d(all_rows, numbers, assume_unique=True)[: len(frame)]
    blank = frame.isna().all(axis=1).to_numpy()
    frame, row_number = frame[~blank].reset_index(drop=True), row_number[~blank]
    malformed = pd.DataFrame(
        [(n, why) for n, why in skipped if why], columns=["row_number", "reason"]
    )
    return RawLog(path, frame, row_number, malformed.astype({"row_number": np.int64}))


def _no_malformed() -> pd.DataFrame:
    return pd.DataFrame(
        {"row_number": np.array([], dtype=np.int64), "reason": np.array([], dtype=object)}
    )


def parse_timestamps(values: pd.Series) -> Timestamps:
    """Epoch seconds (int, float or numeric text) or ISO 8601 text; naive times are UTC.

    values: [R]. A purely numeric value is always read as epoch seconds.
    """
    n = len(values)
    us = np.zeros(n, dtype=np.int64)
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        values.dtype
    ):
        stamps = pd.to_datetime(values, utc=True)
        missing = stamps.isna().to_numpy()
        us[~missing] = _micros(stamps[~missing])
        none = np.zeros(n, dtype=bool)
        return Timestamps(us, missing, none, none.copy())
    if pd.api.types.is_numeric_dtype(values.dtype):
        text = pd.Series(np.full(n, None, dtype=object), index=values.index)
        seconds = pd.to_numeric(values, errors="coerce").astype("float64")
        missing = seconds.isna().to_numpy()
    else:
        text = values.astype(TEXT).str.strip()
        missing = (text.isna() | (text == "")).to_numpy()
        seconds = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
    numeric = seconds.notna().to_numpy()
    secs = seconds.to_numpy()
    out_of_range = numeric & ~((secs >= 0) & (secs < EPOCH_MAX_S))
    good_epoch = numeric & ~out_of_range
    us[good_epoch] = np.round(secs[good_epoch] * 1e6).astype(np.int64)
    iso = ~missing & ~numeric
    unparseable = np.zeros(n, dtype=bool)
    if iso.any():
        stamps = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
        bad = stamps.isna().to_numpy()
        where = np.flatnonzero(iso)
        unparseable[where[bad]] = True
        us[where[~bad]] = _micros(stamps[~bad])
    return Timestamps(us, missing, unparseable, out_of_range)


def _micros(stamps: pd.Series) -> np.ndarray:
    """UTC-aware datetimes [K] -> int64 microseconds since the epoch [K] (sub-µs truncated)."""
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.to_numpy().astype("datetime64[us]").astype(np.int64)
