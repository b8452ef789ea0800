"""External ids (text or int) -> contiguous int64 ids, and back.

Ids are assigned in sorted order of the external ids (0, 1, 2, ...), so the mapping depends on
which ids occur, not on row order. Text ids that are all plain integers (no leading zeros) are
treated as integers, so a CSV and a parquet copy of the same log map identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pinfeed.importer.reader import TEXT

INT_TEXT = r"-?(?:0|[1-9][0-9]{0,17})"
"""Text that reads back as the same int64 (at most 18 digits, so it cannot overflow)."""


@dataclass(frozen=True)
class IdMap:
    """external: [N] the external id of each contiguous id 0..N-1 (int64 or string)."""

    entity: str
    external: pd.Index

    def __len__(self) -> int:
        return len(self.external)

    def lookup(self, external_ids: pd.Series) -> np.ndarray:
        """Contiguous ids [K] of `external_ids` [K]; -1 where the id is not in the map."""
        return self.external.get_indexer(_like(normalise(external_ids), self.external))

    def to_table(self) -> pa.Table:
        values = self.external.to_numpy(dtype=object if self.is_text else np.int64)
        return pa.table(
            {
                "external_id": pa.array(values, pa.string() if self.is_text else pa.int64()),
                "id": pa.array(np.arange(len(self), dtype=np.int64)),
            }
        )

    @property
    def is_text(self) -> bool:
        return not pd.api.types.is_integer_dtype(self.external.dtype)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_table(), path)
        return path


def normalise(values: pd.Series) -> pd.Series:
    """Integers stay int64; text becomes int64 when every value is a plain integer."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(np.int64)
    text = values.astype(TEXT)
    if len(text) and bool(text.str.fullmatch(INT_TEXT).all()):
        return text.astype(np.int64)
    return text


def build_id_map(values: pd.Series, entity: str) -> tuple[IdMap, np.ndarray]:
    """Map `values` [R] (no nulls) onto contiguous ids; returns the map and ids [R] int64."""
    codes, uniques = pd.factorize(normalise(values), sort=True)
    return IdMap(entity=entity, external=pd.Index(uniques)), codes.astype(np.int64)


def _like(values: pd.Series, index: pd.Index) -> pd.Series:
    """Bring looked-up ids to the map's type (int map: non-integer text cannot match)."""
    if pd.api.types.is_integer_dtype(index.dtype):
        if pd.api.types.is_integer_dtype(values.dtype):
            return values
        return pd.Series(np.full(len(values), None, dtype=object))
    return values.astype(TEXT)
