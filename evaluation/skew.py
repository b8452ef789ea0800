"""`pinfeed evaluate skew`: row-level training/serving skew of the `serving_v1` features.

Each logged row (`feature_repo.feature_logging`: what serving used for one candidate of one
request) is recomputed offline the way training sets are built: a point-in-time
`get_historical_features` of `serving_v1` for the row's entities at its log timestamp
(`training.training_sets.join_features`). Then, per feature, every logged row lands in one of:

- matched: both sides hold a value and they agree within the tolerance (`RTOL`, `ATOL`:
  `|online - offline| <= ATOL + RTOL * |offline|`, element by element for lists and
  embeddings, which must also have the same length; integers and booleans exactly), or both
  sides miss it (counted as `both_missing` too: training sees the same gap serving saw);
- mismatched: both hold a value and they differ;
- online_only: serving had a value, the offline recomputation has none (or lost the row);
- offline_only: the offline recomputation has a value, serving looked it up and had none.

Features serving did not log (status unset) are counted as `not_logged` and left out.
`match_rate` is matched / compared over all compared feature values (each feature's own rate
too); the JSON carries up to `examples` mismatches per feature, and a PNG bar chart of the
per-feature match rate and a Markdown table are written beside it.

Expected differences (skew by design, not bugs):

- `cluster_reward__*`: realtime rewards are pushed to the online store only
  (`push_cluster_rewards`); the offline table changes only when the batch reward job runs, so
  a cluster rewarded since then is a mismatch (or online_only for a new cluster).
- pin-keyed views (`pin_features`, `pin_dwell`, `pin_content`, `query_pin_content`): serving
  reads them from its in-memory pin cache, reloaded only when a newer materialisation is seen
  (every `cache_refresh_s`), so rows logged just after a materialisation can carry the previous
  snapshot.
- every view: the online store holds the latest *materialised* value, the offline join the
  latest value stamped before the log time. A snapshot stamped before the log time but not yet
  materialised is a mismatch, and a value older than the view's ttl is online_only (Feast's
  ttl bounds the offline lookback but does not expire online values); serving a world whose
  data are stamped in the past therefore shows up as online_only everywhere but pin_content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore

from feature_repo.feature_logging import (
    LOG_TIMESTAMP_FIELD,
    NOT_LOGGED,
    PRESENT,
    REQUEST_ID_FIELD,
    STATUS_SUFFIX,
    LogSpec,
    log_spec,
    read_logged,
)
from feature_repo.store import open_store
from pinfeed.errors import DataNotFoundError
from pinfeed.home import ProjectHome
from training.training_sets import join_features

RTOL = 1e-5
ATOL = 1e-6
EXAMPLES = 5
MAX_ROWS_PER_QUERY = 200_000
ROW = "log_row"
"""Carried through the point-in-time join to pair each offline row with its logged row."""
OUTCOMES = ("matched", "mismatched", "online_only", "offline_only")


@dataclass(frozen=True)
class SkewResult:
    report: dict[str, Any]
    json_path: Path
    png_path: Path
    markdown_path: Path


def recompute_offline(store: FeatureStore, spec: LogSpec, logs: pa.Table) -> pa.Table:
    """[R] offline rows aligned with `logs` [R]: the point-in-time values of `spec.service` for
    each logged row's entities at its log time (null columns where Feast returned no row)."""
    frame = pd.DataFrame(
        {key: logs.column(key).fill_null(-1).to_numpy() for key in spec.keys}
        | {
            "event_timestamp": logs.column(LOG_TIMESTAMP_FIELD).to_pandas(),
            ROW: np.arange(logs.num_rows, dtype=np.int64),
        }
    )
    joined = join_features(store, frame, spec.service.name, MAX_ROWS_PER_QUERY)
    rows = joined.column(ROW).to_numpy()
    position = np.full(logs.num_rows, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    found = position >= 0
    taken = pa.array(np.where(found, position, 0)).cast(pa.int64())
    columns = {}
    for name in spec.features:
        column = joined.column(name).take(taken).combine_chunks()
        target = spec.schema.field(name).type
        columns[name] = pc.if_else(pa.array(found), column, pa.nulls(len(found), column.type)).cast(
            target
        )
    return pa.table(columns)


def _same(online: pa.Array, offline: pa.Array, value_type: pa.DataType) -> np.ndarray:
    """[R] bool: equal within the tolerance, where both hold a value (else meaningless)."""
    if pa.types.is_list(value_type):
        return _same_lists(online, offline, value_type.value_type)
    if pa.types.is_floating(value_type):
        a = online.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        b = offline.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
        return np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
    zero = pa.scalar(False) if pa.types.is_boolean(value_type) else pa.scalar(0, value_type)
    return online.fill_null(zero).to_numpy(zero_copy_only=False) == offline.fill_null(
        zero
    ).to_numpy(zero_copy_only=False)


def _same_lists(online: pa.Array, offline: pa.Array, item: pa.DataType) -> np.ndarray:
    n = len(online)
    lengths_a = pc.list_value_length(online).fill_null(0).to_numpy(zero_copy_only=False)
    lengths_b = pc.list_value_length(offline).fill_null(0).to_numpy(zero_copy_only=False)
    comparable = lengths_a == lengths_b
    mask = pa.array(comparable)
    a = pc.list_flatten(online.filter(mask))
    b = pc.list_flatten(offline.filter(mask))
    rows = np.repeat(np.flatnonzero(comparable), lengths_a[comparable])
    equal = _same(a, b, item)
    wrong = np.bincount(rows, weights=~equal, minlength=n)
    return comparable & (wrong == 0)


def compare_feature(
    name: str, logs: pa.Table, offline: pa.Table, value_type: pa.DataType, examples: int
) -> dict[str, Any]:
    """Counts of one feature over the logged rows (see the module docstring) and examples."""
    status = logs.column(name + STATUS_SUFFIX).to_numpy()
    logged = status != NOT_LOGGED
    online = logs.column(name).combine_chunks()
    recomputed = offline.column(name).combine_chunks()
    has_online = (status == PRESENT) & np.asarray(online.is_valid())
    has_offline = np.asarray(recomputed.is_valid())
    equal = _same(online, recomputed, value_type)
    outcome = {
        "matched": logged & ((has_online & has_offline & equal) | (~has_online & ~has_offline)),
        "mismatched": logged & has_online & has_offline & ~equal,
        "online_only": logged & has_online & ~has_offline,
        "offline_only": logged & ~has_online & has_offline,
    }
    compared = int(logged.sum())
    counts = {kind: int(rows.sum()) for kind, rows in outcome.items()}
    shown = np.flatnonzero(logged & ~outcome["matched"])[:examples]
    return {
        "rows": compared,
        **counts,
        "both_missing": int((logged & ~has_online & ~has_offline).sum()),
        "not_logged": int((~logged).sum()),
        "match_rate": counts["matched"] / compared if compared else None,
        "examples": [_example(logs, online, recomputed, int(row), outcome) for row in shown],
    }


def _example(
    logs: pa.Table, online: pa.Array, offline: pa.Array, row: int, outcome: dict[str, np.ndarray]
) -> dict[str, Any]:
    kind = next(k for k in OUTCOMES if outcome[k][row])
    keys = {
        name: logs.column(name)[row].as_py()
        for name in ("user_id", "pin_id", "query_pin_id", "cluster_id")
        if name in logs.column_names
    }
    return {
        "kind": kind,
        "request_id": logs.column(REQUEST_ID_FIELD)[row].as_py(),
        "log_timestamp": logs.column(LOG_TIMESTAMP_FIELD)[row].as_py().isoformat(),
        **keys,
        "online": _shown(online[row].as_py()),
        "offline": _shown(offline[row].as_py()),
    }


def _shown(value: Any, limit: int = 8) -> Any:
    """A list longer than `limit` as its first items plus its length (embeddings are long)."""
    if isinstance(value, list) and len(value) > limit:
        return {"first": value[:limit], "length": len(value)}
    return value


def skew_report(
    store: FeatureStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    examples: int = EXAMPLES,
) -> dict[str, Any]:
    """The skew of the logged `serving_v1` rows with `since <= log time < until`."""
    spec = log_spec(store)
    logs = read_logged(spec, since, until)
    if logs.num_rows == 0:
        raise DataNotFoundError(
            f"no logged feature vectors in {spec.destination} for the window "
            f"[{since or '-inf'}, {until or '+inf'}): serve requests with feature logging on "
            "(serving_v1's logging_config) or widen --since/--until"
        )
    offline = recompute_offline(store, spec, logs)
    features = {
        name: compare_feature(name, logs, offline, spec.schema.field(name).type, examples)
        for name in spec.features
    }
    compared = sum(f["rows"] for f in features.values())
    matched = sum(f["matched"] for f in features.values())
    stamps = logs.column(LOG_TIMESTAMP_FIELD)
    return {
        "service": spec.service.name,
        "window": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "first_log": pc.min(stamps).as_py().isoformat(),
            "last_log": pc.max(stamps).as_py().isoformat(),
        },
        "rows": logs.num_rows,
        "requests": len(pc.unique(logs.column(REQUEST_ID_FIELD))),
        "tolerance": {
            "rtol": RTOL,
            "atol": ATOL,
            "rule": "|online - offline| <= atol + rtol * |offline|, elementwise for lists; "
            "integers and booleans exactly; both missing counts as matched",
        },
        "compared_values": compared,
        "matched_values": matched,
        "match_rate": matched / compared if compared else 1.0,
        "skewed_features": [
            name for name, f in features.items() if f["rows"] and f["matched"] < f["rows"]
        ],
        "features": features,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """One line per feature: rows, matched, mismatched, online-only, offline-only, match rate."""
    lines = [
        f"{report['service']}: {report['rows']} logged rows ({report['requests']} requests), "
        f"match rate {report['match_rate']:.4f} over {report['compared_values']} values "
        f"(rtol {report['tolerance']['rtol']}, atol {report['tolerance']['atol']}).",
        "",
        "| feature | rows | matched | mismatched | online only | offline only | match rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in report["features"].items():
        rate = "not logged" if f["match_rate"] is None else f"{f['match_rate']:.4f}"
        lines.append(
            f"| {name} | {f['rows']} | {f['matched']} | {f['mismatched']} | "
            f"{f['online_only']} | {f['offline_only']} | {rate} |"
        )
    return "\n".join(lines) + "\n"


def save_chart(path: Path, report: dict[str, Any]) -> Path:
    """Per-feature share of matched, mismatched, online-only and offline-only rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [name for name, f in report["features"].items() if f["rows"]]
    shares = {
        kind: np.array([report["features"][n][kind] / report["features"][n]["rows"] for n in names])
        for kind in OUTCOMES
    }
    figure = Figure(figsize=(9.0, 1.5 + 0.22 * len(names)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    y = np.arange(len(names))
    left = np.zeros(len(names))
    colours = {"matched": "tab:green", "mismatched": "tab:red", "online_only": "tab:orange",
               "offline_only": "tab:purple"}  # fmt: skip
    for kind in OUTCOMES:
        axes.barh(y, shares[kind], left=left, color=colours[kind], label=kind.replace("_", " "))
        left += shares[kind]
    axes.set_yticks(y, names, fontsize="small")
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("share of logged rows")
    axes.set_title(
        f"{report['service']}: online vs point-in-time offline, match rate "
        f"{report['match_rate']:.4f} ({report['rows']} rows)"
    )
    figure.legend(fontsize="small", loc="outside lower center", ncols=len(OUTCOMES))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def evaluate_skew(
    home: ProjectHome,
    *,
    out: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SkewResult:
    """Write the skew report (JSON at `out`, default `<home>/reports/skew.json`) with its PNG
    chart and Markdown table beside it."""
    store = open_store(home)
    report = skew_report(store, since=since, until=until)
    json_path = out or home.reports / "skew.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2))
    markdown_path = json_path.with_suffix(".md")
    markdown_path.write_text(markdown_table(report))
    png_path = save_chart(json_path.with_suffix(".png"), report)
    return SkewResult(report, json_path, png_path, markdown_path)
