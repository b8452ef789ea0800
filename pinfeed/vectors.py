"""Content embeddings out of list-valued columns (Arrow/pandas lists, Feast online values) into
one [N, D] float32 matrix: the step the ranker's training rows and serving's pin cache share."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pinfeed.errors import SchemaError


def _missing(value: object) -> bool:
    """None, NaN, or pandas' NA (what an Arrow-backed pandas column holds for a null list)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def stack_embeddings(
    values: Iterable[object], dim: int, name: str, *, nullable: bool = True
) -> NDArray[np.float32]:
    """[N, dim] float32 from N vectors; a missing one becomes zeros where `nullable`, else a
    SchemaError naming `name` and the row (as does a vector of the wrong length)."""
    rows = list(values)
    out = np.zeros((len(rows), dim), dtype=np.float32)
    for row, value in enumerate(rows):
        if _missing(value):
            if not nullable:
                raise SchemaError(f"{name}: row {row} is null; every pin has an embedding")
            continue
        vector = np.asarray(value, dtype=np.float32)
        if vector.shape != (dim,):
            raise SchemaError(f"{name}: row {row} has length {vector.size}, expected {dim}")
        out[row] = vector
    return out
