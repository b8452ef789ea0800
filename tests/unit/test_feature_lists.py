"""The features both models read come from the feature-table contract, in one place: names,
order, source columns and transforms; the event contract is the same for the generator, the
importer and the validator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from feature_repo.tables import (
    FEATURE_TABLES,
    HEAVY_TAILED,
    PIN_DWELL,
    PIN_FEATURES,
    USER_DWELL,
    USER_FEATURES,
    feature_columns,
    feature_view_of,
)
from pinfeed.errors import ConfigError, SchemaError
from pinfeed.schema import PIN_SCHEMA, UNKNOWN_TOPIC
from pinfeed.validate import validate_table
from pinfeed.vectors import stack_embeddings
from training.dense import DenseTransform
from training.features import (
    LOG1P_FEATURES,
    QUERY_CONTENT_EMBEDDING,
    USER_DENSE_FEATURES,
    source_column,
)
from training.ranking.features import DENSE_FEATURES, SOURCE_COLUMNS
from training.retrieval.config import TowerConfig
from training.retrieval.features import PIN_DENSE_FEATURES


def test_both_models_read_the_table_columns_in_contract_order() -> None:
    assert tuple(USER_FEATURES.names[2:] + USER_DWELL.names[2:]) == USER_DENSE_FEATURES
    assert DENSE_FEATURES[: len(USER_DENSE_FEATURES)] == USER_DENSE_FEATURES
    pins = PIN_FEATURES.names[2:] + PIN_DWELL.names[2:]
    assert DENSE_FEATURES[len(USER_DENSE_FEATURES) : -2] == tuple(pins)
    assert (*PIN_FEATURES.names[2:], "shoppable") == PIN_DENSE_FEATURES


def test_log1p_is_the_heavy_tailed_marking_of_the_tables() -> None:
    marked = {
        field.name
        for schema in FEATURE_TABLES.values()
        for field in schema
        if field.metadata == HEAVY_TAILED
    }
    assert marked | {"position"} == LOG1P_FEATURES
    assert "user_impressions_30d" in LOG1P_FEATURES and "pin_click_rate_30d" not in LOG1P_FEATURES
    dense = torch.tensor([[float("nan"), 99.0], [3.0, 0.25]])
    names = ("user_impressions_30d", "pin_click_rate_30d")
    np.testing.assert_allclose(
        DenseTransform(names)(dense).numpy(), [[0.0, 99.0], [np.log1p(3.0), 0.25]], rtol=1e-6
    )


def test_source_columns_are_the_feast_full_names() -> None:
    for feature in DENSE_FEATURES:
        column = source_column(feature)
        assert column == "position" or column == f"{feature_view_of(feature)}__{feature}"
        assert SOURCE_COLUMNS[feature] == column
    assert source_column("topic") == "pin_content__topic"
    assert source_column(QUERY_CONTENT_EMBEDDING) == "query_pin_content__content_embedding"
    columns = [c for schema in FEATURE_TABLES.values() for c in feature_columns(schema)]
    assert len(columns) == len(set(columns)), "a feature column name is used by two tables"


def test_unknown_topic_is_part_of_the_event_contract() -> None:
    pins = pa.table(
        {
            "pin_id": [0, 1, 2],
            "created_ts": pa.array([0, 0, 0], pa.timestamp("us", tz="UTC")),
            "topic": pa.array([3, UNKNOWN_TOPIC, -2], pa.int32()),
            "shoppable": [True, False, True],
            "content_embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        }
    ).cast(PIN_SCHEMA)
    report = validate_table("pins", pins, embedding_dim=2)
    assert [(row, field) for row, field, _ in report.problems] == [(2, "topic")]
    towers = TowerConfig.from_data(
        np.array([0, 1]), np.array([0, 1, 2]), np.array([3, UNKNOWN_TOPIC]), content_dim=2
    )
    assert towers.n_topics == 4
    only_unknown = TowerConfig.from_data(
        np.array([0]), np.array([0]), np.array([UNKNOWN_TOPIC]), content_dim=2
    )
    assert only_unknown.n_topics == 1
    with pytest.raises(ConfigError, match="topic"):
        TowerConfig.from_data(np.array([0]), np.array([0]), np.array([-2]), content_dim=2)


def test_missing_embeddings_read_as_zeros_whatever_pandas_calls_them() -> None:
    """A null query embedding is None, NaN, or pd.NA (Ray Data's Arrow-backed pandas batches)."""
    values = [[1.0, 2.0], None, float("nan"), pd.NA]
    np.testing.assert_array_equal(
        stack_embeddings(values, 2, "query"), [[1.0, 2.0], [0, 0], [0, 0], [0, 0]]
    )
    with pytest.raises(SchemaError, match="row 1 is null"):
        stack_embeddings([[1.0, 2.0], pd.NA], 2, "pin", nullable=False)
