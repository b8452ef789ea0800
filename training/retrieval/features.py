"""The retrieval model's inputs: feature order, the batch type, and table -> tensors.

The order of the dense features is part of the contract with serving (the manifest records
it): column k of `user_dense` is always `USER_DENSE_FEATURES[k]`. Raw values go in; the
towers apply `log1p` to the heavy-tailed columns (`LOG1P_FEATURES`) themselves, so training
and serving cannot disagree on the transform.

Notation: B batch size, D content embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch

from pinfeed.errors import SchemaError
from training.feature_names import USER_DENSE_FEATURES

PIN_DENSE_FEATURES: tuple[str, ...] = (
    "pin_impressions_30d",
    "pin_closeup_rate_30d",
    "pin_save_rate_30d",
    "pin_click_rate_30d",
    "pin_long_click_rate_30d",
    "pin_conversion_rate_30d",
    "pin_age_days",
    "shoppable",
)
LOG1P_FEATURES: frozenset[str] = frozenset(
    {
        "user_impressions_7d",
        "user_impressions_30d",
        "user_conversions_30d",
        "user_clicks_30d",
        "user_dwell_mean_s",
        "user_dwell_median_s",
        "pin_impressions_30d",
        "pin_age_days",
    }
)
"""Counts, seconds and ages: heavy-tailed, so the towers see log1p(max(x, 0))."""

POSITIVE_KINDS: tuple[str, ...] = ("conversion", "click", "save")
"""`positive_kind` values; a kind's code is its position here."""
KIND_CONVERSION, KIND_CLICK, KIND_SAVE = 0, 1, 2

QUERY_TOWER_INPUTS: tuple[str, ...] = ("user_id", "user_dense", "query_pin_id", "query_content")
PIN_TOWER_INPUTS: tuple[str, ...] = ("pin_id", "pin_dense", "pin_content", "topic")


def log1p_mask(names: tuple[str, ...]) -> torch.Tensor:
    """[F] bool: which of `names` go through log1p."""
    return torch.tensor([name in LOG1P_FEATURES for name in names], dtype=torch.bool)


@dataclass(frozen=True)
class RetrievalBatch:
    """One batch of (user, query pin, positive pin) rows.

    Shapes: ids and `kind` [B] int64; `user_dense` [B, 12]; `pin_dense` [B, 8];
    `query_content`, `pin_content` [B, D] float32; `dwell_s` [B] float32 (NaN without a click).
    """

    user_id: torch.Tensor
    query_pin_id: torch.Tensor
    pin_id: torch.Tensor
    user_dense: torch.Tensor
    query_content: torch.Tensor
    pin_dense: torch.Tensor
    pin_content: torch.Tensor
    topic: torch.Tensor
    kind: torch.Tensor
    dwell_s: torch.Tensor

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def select(self, rows: torch.Tensor) -> RetrievalBatch:
        """The batch restricted to `rows` ([B] bool or [b] int64)."""
        return RetrievalBatch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def to(self, device: torch.device | str) -> RetrievalBatch:
        return RetrievalBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def encode_kinds(kinds: np.ndarray | list[str]) -> np.ndarray:
    """[B] strings in `POSITIVE_KINDS` -> [B] int64 codes; raise naming the unknown kind."""
    values = np.asarray(kinds, dtype=object)
    codes = np.full(len(values), -1, dtype=np.int64)
    for code, name in enumerate(POSITIVE_KINDS):
        codes[values == name] = code
    if (codes < 0).any():
        bad = sorted({str(v) for v in values[codes < 0]})
        raise SchemaError(
            f"positive_kind: unknown value(s) {bad}; expected one of {POSITIVE_KINDS}"
        )
    return codes


COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "content_embedding": ("pin_content__content_embedding", "content_embedding"),
    "query_content_embedding": (
        "query_pin_content__content_embedding",
        "query_content_embedding",
    ),
    "topic": ("pin_content__topic", "topic"),
    "shoppable": ("pin_content__shoppable", "shoppable"),
}
"""Where a feature may sit in a training set, in order of preference. The training sets use
Feast's full names (`view__feature`); the candidate's and the query pin's content share
feature names, so those are spelled out and nothing else will do (a suffix match would
silently read the query pin's topic). Any other feature is found by its bare name or as the
one column ending in `__<name>`."""

MISSING_ID = -1
"""Stands for a null id (a positive without a query pin): the towers give it its own row."""


def resolve_column(columns: list[str], feature: str) -> str:
    """The column of `columns` that holds `feature` (see `COLUMN_ALIASES`)."""
    aliases = COLUMN_ALIASES.get(feature)
    for candidate in aliases or (feature,):
        if candidate in columns:
            return candidate
    if aliases:
        raise SchemaError(f"retrieval training set: no column for {feature!r}; expected {aliases}")
    suffixed = [name for name in columns if name.endswith(f"__{feature}")]
    if len(suffixed) == 1:
        return suffixed[0]
    found = f"several: {suffixed}" if suffixed else "none"
    raise SchemaError(f"retrieval training set: no single column for {feature!r} ({found})")


def _embedding_matrix(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """A list<float32> column -> [B, D] float32; null rows become zeros (no query pin)."""
    values = column.combine_chunks()
    lengths = values.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    width = int(lengths.max(initial=0))
    if ((lengths != width) & values.is_valid().to_numpy(zero_copy_only=False)).any():
        raise SchemaError(f"{name}: embeddings must all have the same length")
    matrix = np.zeros((len(values), width), dtype=np.float32)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    flat = values.drop_null().flatten().to_numpy(zero_copy_only=False)
    matrix[valid] = np.asarray(flat, dtype=np.float32).reshape(int(valid.sum()), width)
    return matrix


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """[B] float32, nulls as NaN (the towers zero them)."""
    return np.array(column.cast(pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32)


def _ids(column: pa.ChunkedArray) -> torch.Tensor:
    """[B] int64, nulls as `MISSING_ID`."""
    return torch.from_numpy(
        np.array(column.cast(pa.int64()).fill_null(MISSING_ID).to_numpy(), dtype=np.int64)
    )


def batch_from_table(table: pa.Table) -> RetrievalBatch:
    """Turn rows of the retrieval training set into tensors (see `RetrievalBatch`)."""
    names = table.column_names

    def column(feature: str) -> pa.ChunkedArray:
        return table.column(resolve_column(names, feature))

    def dense(features: tuple[str, ...]) -> torch.Tensor:
        return torch.from_numpy(np.stack([_floats(column(f)) for f in features], axis=1))

    kinds = column("positive_kind").to_numpy(zero_copy_only=False)
    return RetrievalBatch(
        user_id=_ids(column("user_id")),
        query_pin_id=_ids(column("query_pin_id")),
        pin_id=_ids(column("pin_id")),
        user_dense=dense(USER_DENSE_FEATURES),
        query_content=torch.from_numpy(
            _embedding_matrix(column("query_content_embedding"), "query_content_embedding")
        ),
        pin_dense=dense(PIN_DENSE_FEATURES),
        pin_content=torch.from_numpy(
            _embedding_matrix(column("content_embedding"), "content_embedding")
        ),
        topic=_ids(column("topic")),
        kind=torch.from_numpy(encode_kinds(kinds)),
        dwell_s=torch.from_numpy(_floats(column("click_dwell_s"))),
    )
