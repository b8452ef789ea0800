"""Row-level validation of event sets: every rejected row gets its problem named.

Checks are vectorised (numpy over Arrow columns): each rule yields a boolean mask of bad rows
and a reason, so a 10M-row table validates in seconds and the report can still say
"row 812: click_dwell_s: present although click is false".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinfeed.errors import ValidationError
from pinfeed.events import EventSet
from pinfeed.schema import CONVERSION_KINDS, SCHEMAS, SURFACES, UNKNOWN_TOPIC

Rule = tuple[str, str, np.ndarray]
"""(field, reason, bad-row mask)."""


@dataclass(frozen=True)
class TableReport:
    """Which rows of one table broke which rule."""

    table: str
    rows: int
    bad: np.ndarray = field(repr=False)
    """Boolean mask, True for rejected rows."""
    problems: list[tuple[int, str, str]]
    """(row, field, reason) for every rejected row (first rule that rejected it)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_bad(self) -> None:
        if self.problems:
            raise ValidationError(self.table, self.problems)


@dataclass(frozen=True)
class ValidationReport:
    tables: dict[str, TableReport]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables.values())

    def raise_if_bad(self) -> None:
        for report in self.tables.values():
            report.raise_if_bad()


def _np(column: pa.ChunkedArray | pa.Array, fill: object = 0) -> np.ndarray:
    return pc.fill_null(column, fill).to_numpy(zero_copy_only=False)


def _nulls(table: pa.Table, name: str) -> Iterator[Rule]:
    for f in SCHEMAS[name]:
        if not f.nullable:
            yield f.name, "missing (null)", _np(pc.is_null(table.column(f.name)), True)


def _in_set(table: pa.Table, name: str, allowed: tuple[str, ...]) -> Rule:
    bad = ~_np(pc.is_in(table.column(name), value_set=pa.array(allowed)), False)
    valid = _np(pc.is_valid(table.column(name)), False)
    return name, f"must be one of {list(allowed)}", bad & valid


def _known(table: pa.Table, name: str, ids: pa.Array | None, entity: str) -> Iterator[Rule]:
    if ids is None:
        return
    bad = ~_np(pc.is_in(table.column(name), value_set=ids), True)
    yield name, f"unknown {entity} (not in {entity}s.parquet)", bad


def _impression_rules(
    t: pa.Table, threshold_s: float | None, users: pa.Array | None, pins: pa.Array | None
) -> Iterator[Rule]:
    yield from _nulls(t, "impressions")
    yield _in_set(t, "surface", SURFACES)
    yield "position", "must be >= 0", _np(t.column("position"), 0) < 0
    click = _np(t.column("click"), False)
    dwell_valid = _np(pc.is_valid(t.column("click_dwell_s")), False)
    dwell = _np(t.column("click_dwell_s"), 0.0).astype(np.float64)
    yield "click_dwell_s", "present although click is false", dwell_valid & ~click
    yield "click_dwell_s", "missing although click is true", click & ~dwell_valid
    yield (
        "click_dwell_s",
        "must be a finite number >= 0",
        dwell_valid & ~(np.isfinite(dwell) & (dwell >= 0)),
    )
    long_click = _np(t.column("long_click"), False)
    yield "long_click", "true although click is false", long_click & ~click
    if threshold_s is not None:
        expected = click & dwell_valid & (dwell >= threshold_s)
        yield (
            "long_click",
            f"disagrees with click_dwell_s >= {threshold_s:g} s",
            (long_click != expected) & click & dwell_valid,
        )
    yield from _known(t, "user_id", users, "user")
    yield from _known(t, "pin_id", pins, "pin")


def _conversion_rules(t: pa.Table, users: pa.Array | None, pins: pa.Array | None) -> Iterator[Rule]:
    yield from _nulls(t, "conversions")
    yield _in_set(t, "kind", CONVERSION_KINDS)
    yield from _known(t, "user_id", users, "user")
    yield from _known(t, "pin_id", pins, "pin")


def _duplicates(column: pa.ChunkedArray) -> np.ndarray:
    values = _np(column, -1)
    order = np.argsort(values, kind="stable")
    dup_sorted = np.zeros(len(values), dtype=bool)
    dup_sorted[1:] = values[order][1:] == values[order][:-1]
    dup = np.zeros(len(values), dtype=bool)
    dup[order] = dup_sorted
    return dup


def _user_rules(t: pa.Table) -> Iterator[Rule]:
    yield from _nulls(t, "users")
    yield "user_id", "duplicate id", _duplicates(t.column("user_id"))


def _pin_rules(t: pa.Table, embedding_dim: int | None) -> Iterator[Rule]:
    yield from _nulls(t, "pins")
    yield "pin_id", "duplicate id", _duplicates(t.column("pin_id"))
    yield (
        "topic",
        f"must be >= 0, or {UNKNOWN_TOPIC} for an unknown topic",
        _np(t.column("topic"), 0) < UNKNOWN_TOPIC,
    )
    embeddings = t.column("content_embedding")
    if embedding_dim is not None:
        lengths = _np(pc.list_value_length(embeddings), -1)
        yield (
            "content_embedding",
            f"must have {embedding_dim} values",
            (lengths != embedding_dim) & (lengths >= 0),
        )
    flat = pc.list_flatten(embeddings)
    if len(flat):
        finite = _np(pc.is_finite(flat), False)
        parents = _np(pc.list_parent_indices(embeddings), 0)
        bad = np.zeros(t.num_rows, dtype=bool)
        bad[parents[~finite]] = True
        yield "content_embedding", "must hold finite numbers", bad


def _report(table_name: str, rows: int, rules: Callable[[], Iterator[Rule]]) -> TableReport:
    reason = np.full(rows, -1, dtype=np.int32)
    names: list[tuple[str, str]] = []
    for i, (field_name, why, bad) in enumerate(rules()):
        names.append((field_name, why))
        reason[(reason < 0) & bad] = i
    bad_rows = np.flatnonzero(reason >= 0)
    problems = [(int(r), *names[reason[r]]) for r in bad_rows]
    return TableReport(table=table_name, rows=rows, bad=reason >= 0, problems=problems)


def validate_table(
    name: str,
    table: pa.Table,
    *,
    long_click_threshold_s: float | None = None,
    embedding_dim: int | None = None,
    user_ids: pa.Array | None = None,
    pin_ids: pa.Array | None = None,
) -> TableReport:
    """Check one table (already conformed to its schema) row by row."""
    rules: dict[str, Callable[[], Iterator[Rule]]] = {
        "impressions": lambda: _impression_rules(table, long_click_threshold_s, user_ids, pin_ids),
        "conversions": lambda: _conversion_rules(table, user_ids, pin_ids),
        "users": lambda: _user_rules(table),
        "pins": lambda: _pin_rules(table, embedding_dim),
    }
    return _report(name, table.num_rows, rules[name])


def validate(events: EventSet) -> ValidationReport:
    """Validate every table of an event set, including references between them."""
    users = pc.unique(events.users.column("user_id"))
    pins = pc.unique(events.pins.column("pin_id"))
    meta = events.meta
    return ValidationReport(
        tables={
            "users": validate_table("users", events.users),
            "pins": validate_table("pins", events.pins, embedding_dim=meta.embedding_dim),
            "impressions": validate_table(
                "impressions",
                events.impressions,
                long_click_threshold_s=meta.long_click_threshold_s,
                user_ids=users,
                pin_ids=pins,
            ),
            "conversions": validate_table(
                "conversions", events.conversions, user_ids=users, pin_ids=pins
            ),
        }
    )
