"""In-memory pin features for every pin of the corpus: the candidate side of ranking.

Reading 500 candidate rows per request through `get_online_features` costs 100-200 ms (Feast's
per-row proto work dominates), while pin features change only when a materialisation lands.
So the Features stage reads every corpus pin once, in chunks, into column arrays here, and
reloads when the registry or the store's load ledger shows a newer load (`online.materialised_until`).
When the online store is down, requests are still answered from this copy (degraded).

Notation: N pins in the corpus, D content embedding width, M pins looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from feast import FeatureStore

from pinfeed.errors import SchemaError
from pinfeed.schema import UNKNOWN_TOPIC
from pinfeed.vectors import stack_embeddings
from serving.stages.online import full_name, read_rows

CHUNK = 5000


@dataclass(frozen=True)
class PinFeatureCache:
    """Column arrays over the corpus, rows in ascending pin id.

    Shapes: `pin_ids` [N] int64; `scalars[name]` [N] float32 (NaN: missing) by full feature
    name; `content` [N, D] float32 (zeros: missing); `topic` [N] int64 (`UNKNOWN_TOPIC` where missing);
    `popular` [P] pin ids, most impressions first.
    """

    pin_ids: np.ndarray
    scalars: dict[str, np.ndarray]
    content: np.ndarray
    topic: np.ndarray
    popular: np.ndarray
    materialised_until: tuple[datetime | None, datetime | None] | None
    """`serving.stages.online.materialised_until` when this copy was read."""

    def __len__(self) -> int:
        return int(self.pin_ids.shape[0])

    def rows(self, pin_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows [M], found [M] bool) of `pin_ids` [M]; rows of unknown pins point at row 0."""
        ids = np.asarray(pin_ids, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self.pin_ids, ids), len(self) - 1)
        found = self.pin_ids[rows] == ids
        return np.where(found, rows, 0), found

    def content_of(self, pin_ids: np.ndarray) -> np.ndarray:
        """[M, D] content embeddings; zeros for pins outside the corpus (and id -1)."""
        rows, found = self.rows(pin_ids)
        return np.where(found[:, None], self.content[rows], np.float32(0.0))


def _floats(values: list[object]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)


def load_pin_cache(
    store: FeatureStore,
    refs: Sequence[str],
    pin_ids: np.ndarray,
    *,
    content_column: str,
    topic_column: str,
    popularity_column: str,
    content_dim: int,
    n_popular: int,
    materialised: tuple[datetime | None, datetime | None] | None,
) -> PinFeatureCache:
    """Read `refs` (pin-keyed `view:feature`) for every pin of `pin_ids`, `CHUNK` at a time."""
    ids = np.unique(np.asarray(pin_ids, dtype=np.int64))
    names = [full_name(ref) for ref in refs]
    for column in (content_column, topic_column, popularity_column):
        if column not in names:
            raise SchemaError(f"pin cache: {column!r} is not among the pin features {names}")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        columns = read_rows(store, refs, "pin_id", chunk.tolist())
        for name in names:
            values = columns[name]
            if name == content_column:
                parts[name].append(stack_embeddings(values, content_dim, name))
            elif name == topic_column:
                topic = [UNKNOWN_TOPIC if v is None else int(v) for v in values]
                parts[name].append(np.array(topic, dtype=np.int64))
            elif values and isinstance(next((v for v in values if v is not None), 0.0), list):
                continue  # another list-valued feature: not a model input
            else:
                parts[name].append(_floats(values))
    merged = {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}
    content = merged.pop(content_column)
    topic = merged.pop(topic_column)
    popularity = np.nan_to_num(merged[popularity_column], nan=0.0)
    order = np.argsort(-popularity, kind="stable")[:n_popular]
    return PinFeatureCache(
        pin_ids=ids,
        scalars=merged,
        content=content,
        topic=topic,
        popular=ids[order],
        materialised_until=materialised,
    )
