"""The ranker's inputs: which training-set columns, in what order, and how they become the
four arrays of `pinfeed.artifacts.ranker.RankerInputs` the model (and its ONNX export) takes.
numpy + pandas only.

Feature prep here is deliberately thin: it only stacks columns. Every transform (null -> 0,
log1p of counts and durations, standardisation, topic bucketing, the embedding cross features)
lives inside the model, so the exported ONNX graph does it too and serving passes raw feature
values in `DENSE_FEATURES` order: one definition, no train/serve skew. Names, order and source
columns come from `training.features` (the table contract) and go into the manifest.

Model inputs (B rows, F = len(DENSE_FEATURES), D = content embedding length):
    dense            [B, F] float32  raw values; NaN where a feature is missing
    topic            [B]    int64    the candidate pin's topic id (unknown ids share one bucket)
    pin_embedding    [B, D] float32  the candidate pin's content embedding
    query_embedding  [B, D] float32  the query pin's content embedding (zeros: no query pin)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pinfeed.artifacts.ranker import POSITION, RankerInputs
from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.vectors import stack_embeddings
from training.features import (
    CONTENT_EMBEDDING,
    PIN_ACTIVITY_FEATURES,
    PIN_DWELL_FEATURES,
    QUERY_CONTENT_EMBEDDING,
    SHOPPABLE,
    TOPIC,
    USER_DENSE_FEATURES,
    source_columns,
)

PIN_FEATURES: tuple[str, ...] = PIN_ACTIVITY_FEATURES + PIN_DWELL_FEATURES
CONTEXT_FEATURES = (SHOPPABLE, POSITION)
"""`position` is the slot the impression was shown in (position bias); serving scores every
candidate at position 0 so the bias term is the same for all and drops out of the ranking."""

DENSE_FEATURES = USER_DENSE_FEATURES + PIN_FEATURES + CONTEXT_FEATURES
"""Column order of the `dense` input; recorded in the export manifest."""

SOURCE_COLUMNS: dict[str, str] = source_columns(
    (*DENSE_FEATURES, TOPIC, CONTENT_EMBEDDING, QUERY_CONTENT_EMBEDDING)
)
"""Model feature -> the column holding it in a training set or a Feast read with
`full_feature_names=True` (`view__feature`, views of the `ranking_v1` service); `position` is
the impression's own column. A frame with bare model names (tests, hand-built rows) is
accepted too."""

LABELS = ENGAGEMENTS


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise SchemaError(
            f"ranking training set: missing column(s) {missing}; the ranking_v1 feature service "
            "must provide them"
        )


def _column(frame: pd.DataFrame, feature: str) -> pd.Series:
    """The column holding model feature `feature`: its Feast full name, else its bare name."""
    source = SOURCE_COLUMNS.get(feature, feature)
    for name in (source, feature):
        if name in frame.columns:
            return frame[name].rename(feature)
    raise SchemaError(
        f"ranking rows: no column {source!r} (or {feature!r}); the ranking_v1 feature service "
        "must provide it"
    )


def ranker_arrays(frame: pd.DataFrame, embedding_dim: int) -> RankerInputs:
    """Training-set rows (columns as in `SOURCE_COLUMNS`) -> model inputs. Missing dense values
    stay NaN (the model maps them to 0); a missing query embedding becomes zeros (cosine 0)."""
    dense = np.column_stack(
        [
            _column(frame, name).to_numpy(dtype=np.float32, na_value=np.nan)
            for name in DENSE_FEATURES
        ]
    )
    return RankerInputs(
        dense=dense.astype(np.float32, copy=False),
        topic=_column(frame, TOPIC).to_numpy(dtype=np.int64, na_value=-1),
        pin_embedding=stack_embeddings(
            _column(frame, CONTENT_EMBEDDING), embedding_dim, CONTENT_EMBEDDING, nullable=False
        ),
        query_embedding=stack_embeddings(
            _column(frame, QUERY_CONTENT_EMBEDDING), embedding_dim, QUERY_CONTENT_EMBEDDING
        ),
    )


def label_array(frame: pd.DataFrame) -> NDArray[np.float32]:
    """[N, 4] engagement labels in `ENGAGEMENTS` order."""
    _require(frame, LABELS)
    return np.column_stack([frame[name].to_numpy(dtype=np.float32) for name in LABELS])
