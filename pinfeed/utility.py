"""The ranking utility: one score per candidate from the calibrated per-head probabilities,

    utility = sum_t w_t * p_t        over the heads t in `pinfeed.schema.ENGAGEMENTS`,

with the weights in a versioned `utility.json` that serving reloads without retraining (this is
what decouples business value from engagement prediction). numpy + pydantic only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError
from pinfeed.schema import ENGAGEMENTS

_WEIGHT = Field(ge=0.0, allow_inf_nan=False)


class HeadWeights(BaseModel):
    """A finite, non-negative weight per ranking head. Field order is `ENGAGEMENTS` order, so
    a bad or missing value is reported under the head's own name (`weights.save`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    closeup: float = _WEIGHT
    save: float = _WEIGHT
    click: float = _WEIGHT
    long_click: float = _WEIGHT

    def vector(self) -> NDArray[np.float64]:
        """The weights as [H], in `ENGAGEMENTS` order."""
        return np.array([getattr(self, head) for head in ENGAGEMENTS], dtype=np.float64)


class UtilityWeights(BaseModel):
    """A versioned set of utility weights (the content of `utility.json`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Identifies the weights in responses/logs.")
    weights: HeadWeights
    source: str = Field("hand-picked", description="Where they came from: hand-picked, ax, ...")

    @model_validator(mode="after")
    def _some_weight_positive(self) -> UtilityWeights:
        if not self.weights.vector().sum() > 0:
            raise ValueError(
                "weights: at least one head needs a positive weight, else every candidate scores 0"
            )
        return self


def default_utility_weights() -> UtilityWeights:
    """Hand-picked starting weights (sum 1), favouring the engagements closest to a purchase."""
    return UtilityWeights(
        version="hand-v1",
        weights=HeadWeights(closeup=0.1, save=0.2, click=0.3, long_click=0.4),
    )


def utility(p_calibrated: ArrayLike, weights: UtilityWeights) -> NDArray[np.float64]:
    """sum_t w_t p_t: [N, H] calibrated probabilities (ENGAGEMENTS order) -> [N] utilities."""
    p = np.asarray(p_calibrated, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != len(ENGAGEMENTS):
        raise SchemaError(
            f"p_calibrated must be [N, {len(ENGAGEMENTS)}] in {ENGAGEMENTS} order, got {p.shape}"
        )
    return p @ weights.weights.vector()


def save_utility_weights(weights: UtilityWeights, path: Path) -> Path:
    """Write `utility.json` atomically (temp file + rename), so a reloading server never reads
    a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(weights.model_dump_json(indent=2) + "\n")
    os.replace(temporary, path)
    return path


def load_utility_weights(path: Path) -> UtilityWeights:
    """Read and validate `utility.json`; errors name the file and the offending field."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no utility weights; write them with pinfeed.utility.save_utility_weights "
            "(default_utility_weights() gives hand-picked ones)"
        )
    try:
        return UtilityWeights.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from error
    except PydanticValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'utility'}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"{path}: invalid utility weights: {problems}") from error
