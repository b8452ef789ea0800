"""Feature names both models read, derived from the feature-table contract
(`feature_repo/tables.py`) so a renamed or added column changes one place."""

from __future__ import annotations

import pyarrow as pa

from feature_repo.tables import EVENT_TIMESTAMP, USER_DWELL, USER_FEATURES


def feature_columns(schema: pa.Schema) -> tuple[str, ...]:
    """A feature table's feature columns, in contract order (join key and timestamp dropped)."""
    return tuple(name for name in schema.names[1:] if name != EVENT_TIMESTAMP)


USER_DENSE_FEATURES: tuple[str, ...] = feature_columns(USER_FEATURES) + feature_columns(USER_DWELL)
"""The 12 user features of both towers/rankers: 7 activity features, then 5 dwell features."""
