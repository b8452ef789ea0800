"""The ranker's inputs: which training-set columns, in what order, and how they become the four
arrays the model (and its ONNX export) takes. numpy + pandas only.

Feature prep here is deliberately thin: it only stacks columns. Every transform (null -> 0,
log1p of counts and durations, standardisation, topic bucketing, the embedding cross features)
lives inside the model, so the exported ONNX graph does it too and serving passes raw feature
values in `DENSE_FEATURES` order: one definition, no train/serve skew.

Model inputs (B rows, F = len(DENSE_FEATURES), D = content embedding length):
    dense            [B, F] float32  raw values; NaN where a feature is missing
    topic            [B]    int64    the candidate pin's topic id (unknown ids share one bucket)
    pin_embedding    [B, D] float32  the candidate pin's content embedding
    query_embedding  [B, D] float32  the query pin's content embedding (zeros: no query pin)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pinfeed.errors import SchemaError
from pinfeed.schema import ENGAGEMENTS
from training.feature_names import USER_DENSE_FEATURES

USER_FEATURES = USER_DENSE_FEATURES
PIN_FEATURES = (
    "pin_impressions_30d",
    "pin_closeup_rate_30d",
    "pin_save_rate_30d",
    "pin_click_rate_30d",
    "pin_long_click_rate_30d",
    "pin_conversion_rate_30d",
    "pin_age_days",
    "pin_clicks_30d",
    "pin_dwell_mean_s",
    "pin_dwell_median_s",
    "pin_short_click_share",
    "pin_long_click_share",
)
CONTEXT_FEATURES = ("shoppable", "position")
"""`position` is the slot the impression was shown in (position bias); serving scores every
candidate at position 0 so the bias term is the same for all and drops out of the ranking."""

DENSE_FEATURES = USER_FEATURES + PIN_FEATURES + CONTEXT_FEATURES
"""Column order of the `dense` input; recorded in the export manifest."""

LOG1P_FEATURES = frozenset(
    {
        "user_impressions_7d",
        "user_impressions_30d",
        "user_conversions_30d",
        "user_clicks_30d",
        "user_dwell_mean_s",
        "user_dwell_median_s",
        "pin_impressions_30d",
        "pin_age_days",
        "pin_clicks_30d",
        "pin_dwell_mean_s",
        "pin_dwell_median_s",
        "position",
    }
)
"""Heavy-tailed counts and durations, fed through log1p inside the model (rates and shares are
already in [0, 1])."""

TOPIC = "topic"
PIN_EMBEDDING = "content_embedding"
QUERY_EMBEDDING = "query_content_embedding"

_VIEWS = {
    **{name: "user_features" for name in USER_FEATURES[:7]},
    **{name: "user_dwell" for name in USER_FEATURES[7:]},
    **{name: "pin_features" for name in PIN_FEATURES[:7]},
    **{name: "pin_dwell" for name in PIN_FEATURES[7:]},
    "shoppable": "pin_content",
    TOPIC: "pin_content",
    PIN_EMBEDDING: "pin_content",
}
SOURCE_COLUMNS: dict[str, str] = {
    **{name: f"{view}__{name}" for name, view in _VIEWS.items()},
    "position": "position",
    QUERY_EMBEDDING: "query_pin_content__content_embedding",
}
"""Model feature -> the column holding it in a training set or a Feast read with
`full_feature_names=True` (`view__feature`, views of the `ranking_v1` service). `position` is
the impression's own column. The candidate's and the query pin's content share feature names,
so both are spelled out: a suffix match would silently read the query pin's topic. A frame
with bare model names (tests, hand-built serving rows) is accepted too."""

INPUT_NAMES = ("dense", "topic", "pin_embedding", "query_embedding")
"""ONNX input names, in the model's `forward` argument order."""

LABELS = ENGAGEMENTS


@dataclass(frozen=True)
class RankerArrays:
    """The model inputs for N rows (shapes in the module docstring)."""

    dense: NDArray[np.float32]
    topic: NDArray[np.int64]
    pin_embedding: NDArray[np.float32]
    query_embedding: NDArray[np.float32]

    def feed(self) -> dict[str, np.ndarray]:
        """ONNX Runtime feed: input name -> array."""
        return dict(zip(INPUT_NAMES, self.as_tuple(), strict=True))

    def as_tuple(self) -> tuple[np.ndarray, ...]:
        return (self.dense, self.topic, self.pin_embedding, self.query_embedding)

    def take(self, rows: NDArray[np.int64] | slice) -> RankerArrays:
        return RankerArrays(*(array[rows] for array in self.as_tuple()))

    def __len__(self) -> int:
        return int(self.dense.shape[0])


def log1p_mask() -> NDArray[np.bool_]:
    """[F] True where the dense feature is log1p-transformed."""
    return np.array([name in LOG1P_FEATURES for name in DENSE_FEATURES], dtype=bool)


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


def _embeddings(column: pd.Series, dim: int, *, nullable: bool) -> NDArray[np.float32]:
    """Stack a list column into [N, D]; nulls become zeros where allowed."""
    out = np.zeros((len(column), dim), dtype=np.float32)
    for row, value in enumerate(column.to_numpy(dtype=object)):
        if value is None or (np.isscalar(value) and pd.isna(value)):
            if not nullable:
                raise SchemaError(f"{column.name}: row {row} is null; every pin has an embedding")
            continue
        vector = np.asarray(value, dtype=np.float32)
        if vector.shape != (dim,):
            raise SchemaError(f"{column.name}: row {row} has length {vector.size}, expected {dim}")
        out[row] = vector
    return out


def ranker_arrays(frame: pd.DataFrame, embedding_dim: int) -> RankerArrays:
    """Training-set or serving rows (columns as in `SOURCE_COLUMNS`) -> model inputs. Missing dense values stay NaN (the model
    maps them to 0); a missing query embedding becomes zeros (cosine similarity 0)."""
    dense = np.column_stack(
        [
            _column(frame, name).to_numpy(dtype=np.float32, na_value=np.nan)
            for name in DENSE_FEATURES
        ]
    )
    return RankerArrays(
        dense=dense.astype(np.float32, copy=False),
        topic=_column(frame, TOPIC).to_numpy(dtype=np.int64, na_value=-1),
        pin_embedding=_embeddings(_column(frame, PIN_EMBEDDING), embedding_dim, nullable=False),
        query_embedding=_embeddings(_column(frame, QUERY_EMBEDDING), embedding_dim, nullable=True),
    )


def label_array(frame: pd.DataFrame) -> NDArray[np.float32]:
    """[N, 4] engagement labels in `ENGAGEMENTS` order."""
    _require(frame, LABELS)
    return np.column_stack([frame[name].to_numpy(dtype=np.float32) for name in LABELS])
