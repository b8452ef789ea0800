"""From attached impressions and conversions to an EventSet that matches `pinfeed.schema`.

- request_id: one per (user, impression time); ids follow time order.
- position: rank of the impression within its request, in file order (0-based).
- surface "homefeed"; cluster_id null (a log knows no pinfeed cluster).
- query_pin_id: the user's latest engaged pin (closeup, save or click) strictly before the
  impression; null for impressions before the user's first engagement.
- users: created_ts = the user's first event; country and age_bucket "unknown".
- pins: created_ts = the pin's first event; topic from embeddings.topics; shoppable = the pin has
  any conversion.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from pinfeed.events import EventSet, EventSetMeta
from pinfeed.importer.impressions import Attached
from pinfeed.schema import CONVERSION_SCHEMA, IMPRESSION_SCHEMA, PIN_SCHEMA, TS, USER_SCHEMA

UNKNOWN = "unknown"


def assemble(
    attached: Attached,
    rows: pd.DataFrame,
    *,
    n_users: int,
    embeddings: np.ndarray,
    topics: np.ndarray,
    long_click_threshold_s: float,
    details: dict,
) -> EventSet:
    """rows: [R] accepted rows (user, pin, ts). embeddings: [P, D] float32; topics: [P] int32."""
    impressions, request_of = _impressions(attached.impressions)
    conversions = _conversions(attached.conversions, request_of)
    meta = EventSetMeta(
        source="import",
        start=_datetime(int(rows["ts"].min())),
        end=_datetime(int(rows["ts"].max())),
        long_click_threshold_s=long_click_threshold_s,
        embedding_dim=int(embeddings.shape[1]),
        has_impressions=attached.had_impression_rows,
        details=details,
    )
    return EventSet(
        impressions=impressions,
        conversions=conversions,
        users=_users(rows, n_users),
        pins=_pins(rows, attached.conversions, embeddings, topics),
        meta=meta,
    )


def _impressions(imp: pd.DataFrame) -> tuple[pa.Table, np.ndarray]:
    """Impressions sorted by (time, user, position). Also returns request_id per input row [I]."""
    ts = imp["ts"].to_numpy()
    user = imp["user"].to_numpy()
    order = np.lexsort((imp["source_row"].to_numpy(), user, ts))
    ts_o, user_o = ts[order], user[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (ts_o[1:] != ts_o[:-1]) | (user_o[1:] != user_o[:-1])
    request_id = np.cumsum(starts) - 1
    start_index = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    position = np.arange(len(order)) - start_index
    request_of = np.empty(len(order), dtype=np.int64)
    request_of[order] = request_id
    sorted_imp = imp.iloc[order].reset_index(drop=True)
    query = _query_pins(sorted_imp)
    n = len(sorted_imp)
    table = pa.table(
        {
            "event_ts": _ts(ts_o),
            "request_id": pa.array(request_id, pa.int64()),
            "user_id": pa.array(user_o, pa.int64()),
            "pin_id": pa.array(sorted_imp["pin"].to_numpy(), pa.int64()),
            "surface": pa.array(np.full(n, "homefeed", dtype=object), pa.string()),
            "query_pin_id": pa.array(query, pa.int64(), from_pandas=True),
            "cluster_id": pa.nulls(n, pa.int64()),
            "position": pa.array(position.astype(np.int32), pa.int32()),
            **{
                name: pa.array(sorted_imp[name].to_numpy(), pa.bool_())
                for name in ("closeup", "save", "click", "long_click")
            },
            "click_dwell_s": pa.array(
                sorted_imp["dwell"].to_numpy(np.float32), pa.float32(), from_pandas=True
            ),
            "hide": pa.nulls(n, pa.bool_()),  # interaction logs carry no hides
        },
        schema=IMPRESSION_SCHEMA,
    )
    return table, request_of


def _query_pins(imp: pd.DataFrame) -> pd.Series:
    """For impressions [I] sorted by time: the user's latest engaged pin strictly earlier."""
    engaged = imp[imp["closeup"] | imp["save"] | imp["click"]]
    probe = pd.DataFrame({"user": imp["user"].to_numpy(), "ts": imp["ts"].to_numpy()})
    found = pd.DataFrame(
        {
            "user": engaged["user"].to_numpy(),
            "ts": engaged["ts"].to_numpy(),
            "query": engaged["pin"].to_numpy(),
        }
    )
    joined = pd.merge_asof(
        probe, found, on="ts", by="user", direction="backward", allow_exact_matches=False
    )
    return joined["query"].astype("Int64")


def _conversions(conv: pd.DataFrame, request_of: np.ndarray) -> pa.Table:
    conv = conv.sort_values(["ts", "user", "pin"], kind="stable")
    follows = conv["impression"].to_numpy()
    known = follows >= 0
    request = np.zeros(len(conv), dtype=np.int64)
    request[known] = request_of[follows[known]]
    return pa.table(
        {
            "event_ts": _ts(conv["ts"].to_numpy()),
            "user_id": pa.array(conv["user"].to_numpy(), pa.int64()),
            "pin_id": pa.array(conv["pin"].to_numpy(), pa.int64()),
            "kind": pa.array(conv["kind"].to_numpy(dtype=object), pa.string()),
            "request_id": pa.array(request, pa.int64(), mask=~known),
        },
        schema=CONVERSION_SCHEMA,
    )


def _users(rows: pd.DataFrame, n_users: int) -> pa.Table:
    first = rows.groupby("user")["ts"].min().reindex(range(n_users)).to_numpy()
    labels = pa.array(np.full(n_users, UNKNOWN, dtype=object), pa.string())
    return pa.table(
        {
            "user_id": pa.array(np.arange(n_users, dtype=np.int64)),
            "created_ts": _ts(first),
            "country": labels,
            "age_bucket": labels,
        },
        schema=USER_SCHEMA,
    )


def _pins(
    rows: pd.DataFrame, conv: pd.DataFrame, embeddings: np.ndarray, topics: np.ndarray
) -> pa.Table:
    n_pins, dim = embeddings.shape
    first = rows.groupby("pin")["ts"].min().reindex(range(n_pins)).to_numpy()
    shoppable = np.bincount(conv["pin"].to_numpy(np.int64), minlength=n_pins) > 0
    offsets = pa.array(np.arange(0, (n_pins + 1) * dim, dim, dtype=np.int32))
    vectors = pa.ListArray.from_arrays(offsets, pa.array(embeddings.astype(np.float32).ravel()))
    return pa.table(
        {
            "pin_id": pa.array(np.arange(n_pins, dtype=np.int64)),
            "created_ts": _ts(first),
            "topic": pa.array(topics, pa.int32()),
            "shoppable": pa.array(shoppable, pa.bool_()),
            "content_embedding": vectors,
        },
        schema=PIN_SCHEMA,
    )


def _ts(micros: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(micros, dtype=np.int64), pa.int64()).cast(TS)


def _datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)
