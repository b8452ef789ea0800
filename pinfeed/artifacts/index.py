"""Top-K over the pin corpus: faiss indexes behind one small ABC.

Every index declares `exact`: evaluation reports recall through the ANN index and through an
exact one, and must know which is which. Scores are inner products of the (unit) tower
embeddings, i.e. cosine similarities.

- `ExactPinIndex`: `IndexFlatIP`, brute force; the truth, fine up to ~50k pins.
- `HnswPinIndex`: `IndexHNSWFlat` with inner product; sublinear, approximate.
`build_pin_index` picks one by corpus size (`IndexConfig.exact_max_pins`).

Exclusion (pins the user already engaged with) is done by over-fetching: one faiss search of
k + max_b |exclude_b| neighbours for the whole batch, then each row drops its excluded pins and
keeps the first k left. For the exact index this is exactly the top-k of the non-excluded
pins; for HNSW it is as good as the index. Rows with fewer than k eligible pins are padded
with pin id -1 and score -inf. Keep exclusion sets to hundreds, not millions: they widen
every row's search.

Saved as `<dir>/pins.faiss` (faiss.write_index), `<dir>/pin_ids.npy` (row -> pin id) and
`<dir>/pin_index.json` (kind, dim, search settings); the names are `pinfeed.artifacts.layout`'s.

Notation: B queries, N pins, E embedding width, k results per query.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import faiss
import numpy as np
from pydantic import Field

from pinfeed.artifacts.layout import INDEX_FILE, INDEX_IDS_FILE, INDEX_META_FILE
from pinfeed.config import FrozenModel
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError

MISSING_PIN = -1


class IndexConfig(FrozenModel):
    """Which faiss index holds the pin corpus."""

    exact_max_pins: int = Field(
        50_000, ge=0, description="Corpora up to this size use exact IndexFlatIP; larger use HNSW."
    )
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree (memory vs recall).")
    hnsw_ef_construction: int = Field(200, gt=0, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(
        256, gt=0, description="HNSW query-time beam width; raised to k+exclusions when smaller."
    )


def _as_matrix(name: str, values: np.ndarray, dim: int | None = None) -> np.ndarray:
    """[rows, E] float32 C-contiguous, or SchemaError naming `name`."""
    matrix = np.ascontiguousarray(values, dtype=np.float32)
    if matrix.ndim != 2 or (dim is not None and matrix.shape[1] != dim):
        want = f"[rows, {dim}]" if dim is not None else "[rows, E]"
        raise SchemaError(f"{name}: shape {matrix.shape} must be {want}")
    return matrix


class PinIndex(ABC):
    """A searchable pin corpus: faiss index + row -> pin id map."""

    kind: ClassVar[str]
    exact: ClassVar[bool]

    def __init__(self, index: faiss.Index, pin_ids: np.ndarray) -> None:
        if index.ntotal != len(pin_ids):
            raise SchemaError(f"pin_ids: {len(pin_ids)} ids for {index.ntotal} indexed vectors")
        self.index = index
        self.pin_ids = np.asarray(pin_ids, dtype=np.int64)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    @abstractmethod
    def build(cls, pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig) -> PinIndex:
        """Index `embeddings` [N, E] (unit rows) of `pin_ids` [N] (unique)."""

    @abstractmethod
    def _search_rows(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss search: -> (scores [B, fetch], rows [B, fetch], -1 where nothing was found)."""

    def _settings(self) -> dict[str, int]:
        return {}

    def search(
        self, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k pins per query, best first, skipping each row's excluded pins.

        Args:
            queries: [B, E] query embeddings.
            k: results per query.
            exclude: None, or B sets of pin ids not to return for that row.

        Returns:
            (pin_ids [B, k] int64, scores [B, k] float32), padded with -1 / -inf.
        """
        queries = _as_matrix("queries", queries, self.dim)
        if k <= 0:
            raise ConfigError(f"k: must be >= 1, got {k}")
        if exclude is not None and len(exclude) != len(queries):
            raise ConfigError(
                f"exclude: {len(exclude)} sets for {len(queries)} queries; give one per row"
            )
        extra = max((len(row) for row in exclude), default=0) if exclude else 0
        fetch = min(k + extra, len(self))
        scores, rows = self._search_rows(queries, fetch)
        ids = np.where(rows >= 0, self.pin_ids[np.maximum(rows, 0)], MISSING_PIN)
        keep = rows >= 0
        if exclude:
            for b, excluded in enumerate(exclude):
                if excluded:
                    keep[b] &= ~np.isin(ids[b], np.fromiter(excluded, dtype=np.int64))
        return _first_k(ids, scores, keep, k)

    def save(self, out_dir: Path) -> list[str]:
        """Write the index, id map and settings to `out_dir`; return the file names (for hashing)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out_dir / INDEX_FILE))
        np.save(out_dir / INDEX_IDS_FILE, self.pin_ids)
        meta = {"kind": self.kind, "exact": self.exact, "dim": self.dim, "n_pins": len(self)}
        (out_dir / INDEX_META_FILE).write_text(json.dumps(meta | self._settings(), indent=2) + "\n")
        return [INDEX_FILE, INDEX_IDS_FILE, INDEX_META_FILE]


def _first_k(
    ids: np.ndarray, scores: np.ndarray, keep: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first k kept (ids, scores), padded with -1 / -inf."""
    out_ids = np.full((len(ids), k), MISSING_PIN, dtype=np.int64)
    out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for b in range(len(ids)):
        kept_ids, kept_scores = ids[b][keep[b]][:k], scores[b][keep[b]][:k]
        out_ids[b, : len(kept_ids)] = kept_ids
        out_scores[b, : len(kept_scores)] = kept_scores
    return out_ids, out_scores


def _checked_corpus(pin_ids: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(pin_ids, dtype=np.int64)
    matrix = _as_matrix("embeddings", embeddings)
    if len(ids) != len(matrix) or len(ids) == 0:
        raise SchemaError(
            f"pin_ids: {len(ids)} ids for {len(matrix)} embeddings; need one per row, >= 1"
        )
    if len(np.unique(ids)) != len(ids):
        raise SchemaError("pin_ids: duplicates; index each pin once")
    return ids, matrix


class ExactPinIndex(PinIndex):
    """Brute-force inner product (`IndexFlatIP`): returns the true top-k."""

    kind = "flat_ip"
    exact = True

    @classmethod
    def build(
        cls, pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig
    ) -> ExactPinIndex:
        ids, matrix = _checked_corpus(pin_ids, embeddings)
        index = faiss.IndexFlatIP(matrix.shape[1])
        index.add(matrix)
        return cls(index, ids)

    def _search_rows(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, fetch)


class HnswPinIndex(PinIndex):
    """HNSW graph over inner product (`IndexHNSWFlat`, METRIC_INNER_PRODUCT): approximate."""

    kind = "hnsw_ip"
    exact = False

    def __init__(self, index: faiss.Index, pin_ids: np.ndarray, ef_search: int) -> None:
        super().__init__(index, pin_ids)
        self.ef_search = ef_search

    @classmethod
    def build(
        cls, pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig
    ) -> HnswPinIndex:
        ids, matrix = _checked_corpus(pin_ids, embeddings)
        index = faiss.IndexHNSWFlat(matrix.shape[1], config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.add(matrix)
        return cls(index, ids, config.hnsw_ef_search)

    def _search_rows(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, fetch)
        return self.index.search(queries, fetch, params=params)

    def _settings(self) -> dict[str, int]:
        return {"ef_search": self.ef_search}


def build_pin_index(pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig) -> PinIndex:
    """Exact up to `config.exact_max_pins` pins, HNSW past it."""
    kind = ExactPinIndex if len(pin_ids) <= config.exact_max_pins else HnswPinIndex
    return kind.build(pin_ids, embeddings, config)


def load_pin_index(out_dir: Path) -> PinIndex:
    """Read an index written by `PinIndex.save`."""
    meta_path = out_dir / INDEX_META_FILE
    if not meta_path.is_file():
        raise DataNotFoundError(
            f"{meta_path}: no pin index here; train one with `pinfeed train retrieval`"
        )
    meta = json.loads(meta_path.read_text())
    index = faiss.read_index(str(out_dir / INDEX_FILE))
    pin_ids = np.load(out_dir / INDEX_IDS_FILE)
    if meta["kind"] == ExactPinIndex.kind:
        return ExactPinIndex(index, pin_ids)
    if meta["kind"] == HnswPinIndex.kind:
        return HnswPinIndex(index, pin_ids, int(meta["ef_search"]))
    raise SchemaError(f"{meta_path}: kind {meta['kind']!r} is not one of flat_ip, hnsw_ip")
