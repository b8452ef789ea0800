"""The retrieval model's inputs: feature order, the batch type, and table -> tensors.

Feature names and order come from `training.features` (derived from the table contract) and are
recorded in the manifest with their source columns: column k of `user_dense` is always
`USER_DENSE_FEATURES[k]`. Raw values go in; the towers log1p the heavy-tailed columns
themselves (`training.dense.DenseTransform`), so training and serving cannot disagree on the
transform.

Notation: B batch size, D content embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch

from pinfeed.errors import SchemaError
from training.features import (
    CONTENT_EMBEDDING,
    PIN_ACTIVITY_FEATURES,
    QUERY_CONTENT_EMBEDDING,
    SHOPPABLE,
    TOPIC,
    USER_DENSE_FEATURES,
    source_column,
)

PIN_DENSE_FEATURES: tuple[str, ...] = (*PIN_ACTIVITY_FEATURES, SHOPPABLE)
"""The pin tower's 8 dense features: pin activity, then the shoppable flag."""

POSITIVE_KINDS: tuple[str, ...] = ("conversion", "click", "save")
"""`positive_kind` values; a kind's code is its position here."""
KIND_CONVERSION, KIND_CLICK, KIND_SAVE = 0, 1, 2


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


MISSING_ID = -1
"""Stands for a null id (a positive without a query pin): the towers give it its own row."""


def resolve_column(columns: list[str], feature: str) -> str:
    """The column of `columns` holding `feature`: its Feast full name (`training.features`), or
    the bare name (hand-built tables, the row's own columns such as `user_id`)."""
    try:
        candidates: tuple[str, ...] = (source_column(feature), feature)
    except KeyError:
        candidates = (feature,)
    for candidate in candidates:
        if candidate in columns:
            return candidate
    raise SchemaError(
        f"retrieval training set: no column for {feature!r}; expected one of {candidates}"
    )


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
            _embedding_matrix(column(QUERY_CONTENT_EMBEDDING), QUERY_CONTENT_EMBEDDING)
        ),
        pin_dense=dense(PIN_DENSE_FEATURES),
        pin_content=torch.from_numpy(
            _embedding_matrix(column(CONTENT_EMBEDDING), CONTENT_EMBEDDING)
        ),
        topic=_ids(column(TOPIC)),
        kind=torch.from_numpy(encode_kinds(kinds)),
        dwell_s=torch.from_numpy(_floats(column("click_dwell_s"))),
    )
