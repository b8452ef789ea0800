"""pinfeed.utility: the linear utility and its versioned, validated weights file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest

from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import (
    HeadWeights,
    UtilityWeights,
    default_utility_weights,
    load_utility_weights,
    save_utility_weights,
    utility,
)


def _weights(**values: float) -> dict[str, float]:
    return {"closeup": 1.0, "save": 2.0, "click": 3.0, "long_click": 4.0, **values}


def test_head_fields_follow_the_engagement_order() -> None:
    assert tuple(HeadWeights.model_fields) == ENGAGEMENTS


def test_hand_computed_utility() -> None:
    weights = UtilityWeights(version="t", weights=HeadWeights(**_weights()))
    p = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.5]])
    # 0.1*1 + 0.2*2 + 0.3*3 + 0.4*4 = 3.0 ; 0.5*4 = 2.0
    np.testing.assert_allclose(utility(p, weights), [3.0, 2.0])


def test_scaling_every_weight_keeps_the_ranking() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(200, 4))
    base = default_utility_weights()
    scaled = UtilityWeights(
        version="x3", weights=HeadWeights(**{h: 3 * getattr(base.weights, h) for h in ENGAGEMENTS})
    )
    np.testing.assert_array_equal(np.argsort(utility(p, base)), np.argsort(utility(p, scaled)))


def test_default_weights_sum_to_one() -> None:
    assert default_utility_weights().weights.vector().sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        (_weights(save=-0.1), "weights.save"),
        (_weights(click=float("inf")), "weights.click"),
        (_weights(closeup=float("nan")), "weights.closeup"),
        ({**_weights(), "hide": 1.0}, "weights.hide"),
        ({k: v for k, v in _weights().items() if k != "long_click"}, "weights.long_click"),
        (_weights(closeup=0.0, save=0.0, click=0.0, long_click=0.0), "weights"),
    ],
)
def test_validation_errors_name_the_field(
    weights: dict[str, float], field: str, tmp_path: Path
) -> None:
    with pytest.raises(pydantic.ValidationError, match=field.split(".")[-1]):
        UtilityWeights.model_validate({"version": "v", "weights": weights})
    path = tmp_path / "utility.json"
    path.write_text(json.dumps({"version": "v", "weights": weights}, allow_nan=True))
    with pytest.raises(ConfigError, match=field) as error:
        load_utility_weights(path)
    assert str(path) in str(error.value)


def test_empty_version_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="version"):
        UtilityWeights(version="", weights=HeadWeights(**_weights()))


def test_json_round_trip(tmp_path: Path) -> None:
    weights = UtilityWeights(version="ax-7", weights=HeadWeights(**_weights()), source="ax")
    path = save_utility_weights(weights, tmp_path / "nested" / "utility.json")
    assert load_utility_weights(path) == weights
    assert json.loads(path.read_text())["weights"]["long_click"] == 4.0
    assert [p.name for p in path.parent.iterdir()] == ["utility.json"]  # no temp file left


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="save_utility_weights"):
        load_utility_weights(tmp_path / "utility.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_utility_weights(bad)


def test_wrong_probability_shape_is_rejected() -> None:
    with pytest.raises(SchemaError, match=r"\[N, 4\]"):
        utility(np.zeros((3, 3)), default_utility_weights())
