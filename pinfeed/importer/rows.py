"""Row checks on a raw interaction log: every bad row gets its row number, field and reason.

Each rule is a vectorised mask over all rows; a row is reported once, under the first rule it
breaks (the order below). Only the few problems shown in an error message are formatted one by
one, to quote the offending value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pinfeed.errors import ValidationError
from pinfeed.importer.reader import TEXT, RawLog, parse_timestamps
from pinfeed.schema import CONVERSION_KINDS

EVENTS = ("impression", "closeup", "save", "click", "long_click", "conversion")
"""Event codes are positions in this tuple (impression = 0 ... conversion = 5)."""
IMPRESSION, CLOSEUP, SAVE, CLICK, LONG_CLICK, CONVERSION = range(len(EVENTS))
SHOWN_PROBLEMS = 5

Rule = tuple[str, str, np.ndarray]
"""(field, reason, bad-row mask [R])."""


@dataclass(frozen=True)
class CheckedRows:
    """The outcome of checking a RawLog.

    good: one row per accepted log row, columns row (1-based number), user_ext, item_ext (ids as
    read), ts (int64 µs since epoch), event (int8 code into EVENTS), dwell (float64, NaN when
    absent), kind (conversion kind; None on other rows).
    problems: (row_number, field, reason) for every rejected row, sorted by row_number.
    bad_positions: positions in RawLog.frame of the rejected rows that were read as rows.
    """

    good: pd.DataFrame
    problems: pd.DataFrame
    bad_positions: np.ndarray


def check_rows(raw: RawLog) -> CheckedRows:
    """Parse and check every row of `raw`; nothing is dropped without a reason."""
    frame = raw.frame
    user, user_null = _ids(frame["user_id"])
    item, item_null = _ids(frame["item_id"])
    ts = parse_timestamps(frame["timestamp"])
    event_text = frame["event"].astype(TEXT).str.strip().str.lower()
    event = (
        event_text.map({name: code for code, name in enumerate(EVENTS)})
        .astype("float64")
        .to_numpy()
    )
    dwell, dwell_rules = _dwell(frame)
    kind, kind_bad = _kind(frame, event)
    rules: list[Rule] = [
        ("user_id", "missing (null or empty)", user_null),
        ("item_id", "missing (null or empty)", item_null),
        ("timestamp", "missing (null or empty)", ts.missing),
        ("timestamp", "unparseable: expected epoch seconds or ISO 8601", ts.unparseable),
        (
            "timestamp",
            "epoch seconds outside 1970..2100 (milliseconds? divide by 1000)",
            ts.out_of_range,
        ),
        ("event", f"must be one of {list(EVENTS)}", np.isnan(event)),
        *dwell_rules,
        (
            "kind",
            f"conversion kind must be one of {list(CONVERSION_KINDS)} (empty: checkout)",
            kind_bad,
        ),
    ]
    first = np.full(len(frame), -1, dtype=np.int32)
    for i, (_, _, bad) in enumerate(rules):
        first[(first < 0) & bad] = i
    bad_positions = np.flatnonzero(first >= 0)
    problems = _problems(raw, rules, first[bad_positions], bad_positions)
    ok = first < 0
    good = pd.DataFrame(
        {
            "row": raw.row_number[ok],
            "user_ext": user[ok].reset_index(drop=True),
            "item_ext": item[ok].reset_index(drop=True),
            "ts": ts.us[ok],
            "event": event[ok].astype(np.int8),
            "dwell": dwell[ok],
            "kind": kind[ok],
        }
    )
    return CheckedRows(good=good, problems=problems, bad_positions=bad_positions)


def _problems(
    raw: RawLog, rules: list[Rule], rule_of: np.ndarray, positions: np.ndarray
) -> pd.DataFrame:
    """(row_number, field, reason) for rejected rows and malformed lines, by row number."""
    fields = np.array([field for field, _, _ in rules], dtype=object)
    reasons = np.array([reason for _, reason, _ in rules], dtype=object)
    rejected = pd.DataFrame(
        {
            "row_number": raw.row_number[positions],
            "field": fields[rule_of],
            "reason": reasons[rule_of],
        }
    )
    malformed = raw.malformed.assign(field="<line>")[["row_number", "field", "reason"]]
    both = pd.concat([rejected, malformed], ignore_index=True)
    return both.sort_values("row_number", kind="stable", ignore_index=True)


def _ids(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Integer ids stay integers; text ids are stripped, and empty text counts as null."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("Int64"), values.isna().to_numpy()
    text = values.astype(TEXT).str.strip()
    return text, (text.isna() | (text == "")).to_numpy()


def _dwell(frame: pd.DataFrame) -> tuple[np.ndarray, list[Rule]]:
    """dwell_s is optional; where given it must be a finite number of seconds >= 0."""
    if "dwell_s" not in frame.columns:
        return np.full(len(frame), np.nan), []
    raw = frame["dwell_s"]
    if pd.api.types.is_numeric_dtype(raw.dtype):
        given = raw.notna().to_numpy()
        dwell = raw.astype("float64").to_numpy()
    else:
        text = raw.astype(TEXT).str.strip()
        given = (text.notna() & (text != "")).to_numpy()
        dwell = pd.to_numeric(text.where(given), errors="coerce").astype("float64").to_numpy()
    not_number = given & np.isnan(dwell)
    rules = [
        ("dwell_s", "not a number", not_number),
        ("dwell_s", "must be finite", np.isinf(dwell)),
        ("dwell_s", "must be >= 0 seconds", ~np.isnan(dwell) & (dwell < 0)),
    ]
    return dwell, rules


def _kind(frame: pd.DataFrame, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Conversion rows default to "checkout"; a `kind` column may say add_to_cart."""
    n = len(frame)
    conversion = event == CONVERSION
    kind = np.full(n, None, dtype=object)
    kind[conversion] = CONVERSION_KINDS[0]
    if "kind" not in frame.columns:
        return kind, np.zeros(n, dtype=bool)
    text = frame["kind"].astype(TEXT).str.strip().str.lower()
    given = (text.notna() & (text != "")).to_numpy() & conversion
    values = text.to_numpy(dtype=object, na_value=None)
    kind[given] = values[given]
    bad = given & ~np.isin(kind, CONVERSION_KINDS)
    return kind, bad


def raise_on_problems(raw: RawLog, checked: CheckedRows) -> None:
    """Stop the import at the first bad row (with the next few for context)."""
    if checked.problems.empty:
        return
    shown = checked.problems.head(SHOWN_PROBLEMS)
    problems = []
    for row, field, reason in shown.itertuples(index=False):
        position = int(np.searchsorted(raw.row_number, row))
        read_as_row = position < len(raw.row_number) and raw.row_number[position] == row
        if read_as_row and field in raw.frame.columns:
            reason = f"{reason} (got {raw.frame[field].iloc[position]!r})"
        problems.append((int(row), field, reason))
    raise ValidationError(
        f"{raw.path} (rows numbered from 1, header not counted; fix them or import with "
        "--skip-bad REJECTS.csv)",
        problems,
        total=len(checked.problems),
    )


def write_rejects(raw: RawLog, checked: CheckedRows, path: Path) -> Path:
    """Rejected rows as CSV: the original columns, then row_number, field and reason."""
    bad = raw.frame.iloc[checked.bad_positions].reset_index(drop=True)
    bad["row_number"] = raw.row_number[checked.bad_positions]
    rejects = bad.merge(checked.problems, on="row_number", how="right")
    rejects = rejects[[*raw.frame.columns, "row_number", "field", "reason"]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rejects.to_csv(path, index=False)
    return path
