"""Top-K over the pin corpus: faiss indexes behind one small ABC.

Every index declares `exact`: evaluation reports recall through the ANN index and through an
exact one, and must know which is which. Scores are inner products of the (unit) tower
embeddings, i.e. cosine similarities.

- `ExactPinIndex`: `IndexFlatIP`, brute force; the truth, fine up to ~50k pins.
- `HnswPinIndex`: `IndexHNSWFlat` with inner product; sublinear, approximate, but a float
  vector plus a graph per pin (~512 bytes at E=64) and a build that grows past minutes at 1M.
- `IvfPinIndex`: an inverted file over an HNSW coarse quantiser with compressed codes, faiss's
  guideline for 1M+ vectors (`IVF{lists}_HNSW32,SQ8`, E+8 bytes per pin; or `PQ{E/2}x4fsr`
  codes, E/4+8 bytes, when memory rules and lower recall is acceptable). Trains k-means on a
  sample (`ivf_train_points_per_list` per list), so it builds in seconds where HNSW takes minutes.
  How many lists a query scans (nprobe) is tuned at build time on the corpus itself: the
  fewest whose recall@k against the exact top-k reaches `ivf_target_recall`, at k = 100 and
  at the depths serving fetches (`TUNE_DEPTHS`; faiss's AutoTune idea, on one knob), because
  the right value depends on how the pins cluster and on how deep a search goes.
`build_pin_index` picks one by corpus size (`IndexConfig.exact_max_pins`, `ivf_min_pins`).

Exclusion (pins the user already engaged with) is done by over-fetching: one faiss search of
k + max_b |exclude_b| neighbours for the whole batch, then each row drops its excluded pins and
keeps the first k left. For the exact index this is exactly the top-k of the non-excluded
pins; for HNSW and IVF it is as good as the index (both widen their search with the fetch).
Rows with fewer than k eligible pins are padded with pin id -1 and score -inf. Keep exclusion
sets to hundreds, not millions: they widen every row's search.

Saved as `<dir>/pins.faiss` (faiss.write_index), `<dir>/pin_ids.npy` (row -> pin id) and
`<dir>/pin_index.json` (kind, dim, search settings); the names are `pinfeed.artifacts.layout`'s.

Notation: B queries, N pins, E embedding width, k results per query.
"""

from __future__ import annotations

import json
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import faiss
import numpy as np
from pydantic import Field, model_validator

from pinfeed.artifacts.layout import INDEX_FILE, INDEX_IDS_FILE, INDEX_META_FILE
from pinfeed.config import FrozenModel
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError

MISSING_PIN = -1
TUNE_QUERIES = 256  # pins used as queries when tuning IVF's nprobe
TUNE_DEPTHS = (100, 250, 500, 1000)
"""Fetch depths IVF's nprobe is tuned at: a top 100 and serving's per-query fetches (500
candidates over 3 queries: 167, 334 or 501 rows plus exclusions use the 250, 500, 1000 rows)."""
PLATEAU_GAIN = 0.005  # recall gained by doubling nprobe below which tuning stops
BARELY_CLUSTERED = 4  # warn when the top 100 needs more than 1/this of the lists


class IndexConfig(FrozenModel):
    """Which faiss index holds the pin corpus."""

    exact_max_pins: int = Field(
        50_000, ge=0, description="Corpora up to this size use exact IndexFlatIP (then HNSW, IVF)."
    )
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree (memory vs recall).")
    hnsw_ef_construction: int = Field(200, gt=0, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(
        256, gt=0, description="HNSW query-time beam width; raised to k+exclusions when smaller."
    )
    ivf_min_pins: int = Field(
        1_000_000, gt=0, description="Corpora of at least this many pins use IVF (IvfPinIndex)."
    )
    ivf_lists: int = Field(
        0, ge=0, description="IVF inverted lists; 0 = the power of two nearest 4*sqrt(pins)."
    )
    ivf_nprobe: int = Field(
        0,
        ge=0,
        description="IVF lists scanned per 100 rows fetched; 0 = tuned per fetch depth.",
    )
    ivf_target_recall: float = Field(
        0.95, gt=0, le=1, description="recall@k vs exact that tuned nprobes reach, per depth k."
    )
    ivf_codes: Literal["sq8", "pq"] = Field(
        "sq8", description="IVF codes: sq8 (E bytes/pin) or pq (E/4 bytes/pin, lower recall)."
    )
    ivf_train_points_per_list: int = Field(
        64, ge=39, description="k-means sample per list (faiss wants 39..256); caps build time."
    )

    @model_validator(mode="after")
    def _ivf_above_exact(self) -> IndexConfig:
        if self.ivf_min_pins <= self.exact_max_pins:
            raise ValueError(
                f"ivf_min_pins ({self.ivf_min_pins}) must exceed exact_max_pins "
                f"({self.exact_max_pins})"
            )
        return self


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

    def _settings(self) -> dict[str, object]:
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

    def _settings(self) -> dict[str, object]:
        return {"ef_search": self.ef_search}


def ivf_lists(n_pins: int, config: IndexConfig) -> int:
    """`config.ivf_lists`, or the power of two nearest 4*sqrt(N) (faiss's 4..16 sqrt(N) rule,
    at its cheap end: k-means cost grows with the list count), at most N/39 lists."""
    if config.ivf_lists:
        return config.ivf_lists
    target = 4 * math.sqrt(n_pins)
    lists = 2 ** round(math.log2(max(target, 1.0)))
    return max(1, min(lists, n_pins // 39))


class IvfPinIndex(PinIndex):
    """Inverted file over an HNSW coarse quantiser, SQ8 or 4-bit PQ codes: approximate, compact.

    A query ranks the list centroids with the HNSW quantiser, scans `nprobe` lists and scores
    their codes; scores are therefore approximate inner products (SQ8 error ~1e-3). How many
    lists a fetch needs grows faster than the fetch (the top 500 spans many more lists than the
    top 100), so nprobe is a table by fetch depth, tuned at each of `TUNE_DEPTHS`: a fetch uses
    the entry of the smallest depth that covers it, and past the deepest, that entry times
    ceil(fetch / depth). Settings go with each search, so wrappers sharing one faiss index do
    not disturb each other.
    """

    kind = "ivf_hnsw"
    exact = False

    def __init__(self, index: faiss.Index, pin_ids: np.ndarray, nprobe: dict[int, int]) -> None:
        super().__init__(index, pin_ids)
        self.lists = int(faiss.extract_index_ivf(index).nlist)
        self.nprobe = {int(depth): int(n) for depth, n in sorted(nprobe.items())}
        if not self.nprobe or min(self.nprobe.values()) < 1:
            raise ConfigError(f"nprobe: {nprobe} must map fetch depths to >= 1 lists")

    @classmethod
    def build(cls, pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig) -> IvfPinIndex:
        ids, matrix = _checked_corpus(pin_ids, embeddings)
        dim = matrix.shape[1]
        if config.ivf_codes == "pq" and dim % 2:
            raise ConfigError(f"ivf_codes: pq needs an even embedding width, got {dim}")
        codes = "SQ8" if config.ivf_codes == "sq8" else f"PQ{dim // 2}x4fsr"
        lists = ivf_lists(len(ids), config)
        index = faiss.index_factory(dim, f"IVF{lists}_HNSW32,{codes}", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.max_points_per_centroid = config.ivf_train_points_per_list
        index.train(matrix)
        index.add(matrix)
        built = cls(index, ids, {TUNE_DEPTHS[0]: config.ivf_nprobe or 1})
        if config.ivf_nprobe:
            return built
        return cls(index, ids, _tuned_nprobe(built, matrix, config))

    def probes(self, fetch: int) -> int:
        """Lists scanned for a fetch of `fetch` rows (at most all of them)."""
        for depth, nprobe in self.nprobe.items():
            if fetch <= depth:
                return min(self.lists, nprobe)
        depth, nprobe = max(self.nprobe.items())
        return min(self.lists, nprobe * math.ceil(fetch / depth))

    def _search_rows(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        nprobe = self.probes(fetch)
        quantizer = faiss.SearchParametersHNSW(efSearch=max(2 * nprobe, 64))
        params = faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=quantizer)
        return self.index.search(queries, fetch, params=params)

    def _settings(self) -> dict[str, object]:
        return {"nprobe": {str(depth): n for depth, n in self.nprobe.items()}, "lists": self.lists}


def _self_excluded(rows: np.ndarray, neighbours: np.ndarray, k: int) -> list[np.ndarray]:
    """Each query's first k neighbours other than its own pin (row)."""
    return [found[found != row][:k] for row, found in zip(rows, neighbours, strict=True)]


def _tuned_nprobe(index: IvfPinIndex, corpus: np.ndarray, config: IndexConfig) -> dict[int, int]:
    """Per depth k of `TUNE_DEPTHS` (below the corpus size): the smallest power-of-two nprobe
    whose recall@k against exact search reaches `ivf_target_recall`; short of it, the nprobe
    where doubling gains under `PLATEAU_GAIN` (coarse codes such as PQ cap recall, and scanning
    more lists then only costs time), else all lists. Warns when the target is out of reach or
    the top 100 needs more than a quarter of the lists.

    Queries: `TUNE_QUERIES` pins of the corpus (query and pin towers share one space), each
    one's own pin left out of both lists so that it does not count as a hit.
    """
    if len(corpus) < 2:  # nothing to rank: scan everything
        return {1: index.lists}
    rows = np.random.default_rng(0).choice(len(corpus), min(TUNE_QUERIES, len(corpus)), False)
    queries = corpus[rows]
    depths = [depth for depth in TUNE_DEPTHS if depth < len(corpus)] or [len(corpus) - 1]
    _, exact = faiss.knn(queries, corpus, depths[-1] + 1, faiss.METRIC_INNER_PRODUCT)
    table, start, short = {}, 1, []
    for depth in depths:
        truth = _self_excluded(rows, exact, depth)

        def recall_at(nprobe: int, depth: int = depth, truth: list = truth) -> float:
            probe = IvfPinIndex(index.index, index.pin_ids, {depth + 1: nprobe})
            found = _self_excluded(rows, probe._search_rows(queries, depth + 1)[1], depth)
            hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, truth, strict=True))
            return hits / (len(rows) * depth)

        table[depth], recall = _doubling_search(recall_at, start, index.lists, config)
        start = table[depth]
        if recall < config.ivf_target_recall:
            short.append(f"recall@{depth} {recall:.3f}")
    if short:
        remedy = "use sq8 codes or HNSW" if config.ivf_codes == "pq" else "use HNSW"
        warnings.warn(
            f"pin index: IVF ({config.ivf_codes} codes) reaches {', '.join(short)} at best, "
            f"short of ivf_target_recall {config.ivf_target_recall}; {remedy} (raise "
            "ivf_min_pins) or lower the target.",
            stacklevel=3,
        )
    first = table[depths[0]]
    if index.lists >= 2 * BARELY_CLUSTERED and first * BARELY_CLUSTERED > index.lists:
        warnings.warn(
            f"pin index: IVF needs {first} of its {index.lists} lists per query for "
            f"recall@{depths[0]} near {config.ivf_target_recall}; these embeddings barely "
            "cluster, so a query scans much of the corpus (slower than exact search). Raise "
            "ivf_min_pins (HNSW) or exact_max_pins instead.",
            stacklevel=3,
        )
    return table


def _doubling_search(
    recall_at: Callable[[int], float], start: int, lists: int, config: IndexConfig
) -> tuple[int, float]:
    """(nprobe, its recall): doubling from `start` until the target, a plateau or all lists."""
    nprobe, recall, last = start, 0.0, -1.0
    while True:
        recall = recall_at(nprobe)
        if recall >= config.ivf_target_recall or nprobe >= lists:
            return nprobe, recall
        if last >= 0 and recall - last < PLATEAU_GAIN:  # the codes, not the lists, bound it
            return nprobe // 2, last
        last, nprobe = recall, min(2 * nprobe, lists)


def build_pin_index(pin_ids: np.ndarray, embeddings: np.ndarray, config: IndexConfig) -> PinIndex:
    """Exact up to `config.exact_max_pins` pins, IVF from `config.ivf_min_pins`, HNSW between."""
    n_pins = len(pin_ids)
    if n_pins <= config.exact_max_pins:
        kind: type[PinIndex] = ExactPinIndex
    elif n_pins < config.ivf_min_pins:
        kind = HnswPinIndex
    else:
        kind = IvfPinIndex
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
    if meta["kind"] == IvfPinIndex.kind:
        nprobe = meta["nprobe"]  # {depth: lists}; a bare number (first version) is per 100 rows
        table = {100: nprobe} if isinstance(nprobe, int) else nprobe
        return IvfPinIndex(index, pin_ids, {int(d): int(n) for d, n in table.items()})
    raise SchemaError(
        f"{meta_path}: kind {meta['kind']!r} is not one of flat_ip, hnsw_ip, ivf_hnsw"
    )
