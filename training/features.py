"""The features both models read, derived from the feature-table contract
(`feature_repo/tables.py`): names, order, where each is read from, and which are log1p'd.

A renamed, added or re-typed column changes the tables and nothing here. Both manifests record
the lists and the source columns, and serving reads them from the manifests, so training and
serving cannot disagree on what column k of a dense input is.

- user features (both models): the 7 activity columns of `user_features`, then the 5 of
  `user_dwell`;
- pin activity (both models): the 7 columns of `pin_features`; the ranker adds the 5 of
  `pin_dwell`;
- `shoppable` (pin content), and for the ranker the impression's `position`.

Source columns are Feast full names (`view__feature`, how training sets and `get_online_features(
..., full_feature_names=True)` name them). The query pin's content comes through the
`query_pin_content` projection, which repeats pin_content's names, so it is spelled out.
"""

from __future__ import annotations

from collections.abc import Iterable

from feature_repo.tables import (
    PIN_DWELL,
    PIN_FEATURES,
    USER_DWELL,
    USER_FEATURES,
    feature_columns,
    feature_view_of,
    heavy_tailed_columns,
)
from pinfeed.artifacts.ranker import CONTENT_EMBEDDING as CONTENT_EMBEDDING  # re-exported
from pinfeed.artifacts.ranker import POSITION
from pinfeed.artifacts.ranker import TOPIC as TOPIC  # re-exported

USER_DENSE_FEATURES: tuple[str, ...] = feature_columns(USER_FEATURES) + feature_columns(USER_DWELL)
"""The 12 user features of both models: 7 activity, then 5 dwell."""
PIN_ACTIVITY_FEATURES: tuple[str, ...] = feature_columns(PIN_FEATURES)
PIN_DWELL_FEATURES: tuple[str, ...] = feature_columns(PIN_DWELL)
SHOPPABLE = "shoppable"
QUERY_CONTENT_EMBEDDING = "query_content_embedding"
QUERY_PIN_VIEW = "query_pin_content"
"""The projection of pin_content onto the query pin (feature_repo/definitions.py)."""

LOG1P_FEATURES: frozenset[str] = heavy_tailed_columns() | {POSITION}
"""Counts, durations and ages (marked in the table contract) and the slot position."""


def source_column(feature: str) -> str:
    """Where `feature` sits in a training set or a full-name online read."""
    if feature == POSITION:
        return POSITION
    if feature == QUERY_CONTENT_EMBEDDING:
        return f"{QUERY_PIN_VIEW}__{CONTENT_EMBEDDING}"
    return f"{feature_view_of(feature)}__{feature}"


def source_columns(features: Iterable[str]) -> dict[str, str]:
    """Feature -> its source column, for a manifest."""
    return {feature: source_column(feature) for feature in features}


def log1p_features(features: Iterable[str]) -> tuple[str, ...]:
    """The members of `features` that go through log1p, sorted (a manifest field)."""
    return tuple(sorted(set(features) & LOG1P_FEATURES))
