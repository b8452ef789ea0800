"""The pin index: exact top-k, exclusions, HNSW and IVF recall against exact, save/load."""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from pathlib import Path

import faiss
import numpy as np
import pytest

from pinfeed.artifacts.index import (
    ExactPinIndex,
    HnswPinIndex,
    IndexConfig,
    IvfPinIndex,
    build_pin_index,
    load_pin_index,
)
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError

CONFIG = IndexConfig(exact_max_pins=1000, ivf_nprobe=4)  # fixed: too few pins to tune


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """[n, dim] unit vectors around `clusters` random centres (the shape of tower outputs)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """500 pins with sparse, shuffled ids; 20 queries."""
    vectors = clustered_unit_vectors(520, 16, 10, seed=0)
    pin_ids = np.random.default_rng(1).permutation(10_000)[:500] * 7
    return pin_ids, vectors[:500], vectors[500:]


def true_top_k(pin_ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return pin_ids[np.argsort(-scores, axis=1, kind="stable")[:, :k]]


def test_small_corpus_gets_the_exact_index(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, _ = corpus
    index = build_pin_index(pin_ids, vectors, CONFIG)
    assert isinstance(index, ExactPinIndex) and index.exact
    assert HnswPinIndex.exact is False and IvfPinIndex.exact is False


def test_the_index_kind_follows_corpus_size(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, _ = corpus
    config = IndexConfig(exact_max_pins=100, ivf_min_pins=400, ivf_nprobe=4)
    kinds = [type(build_pin_index(pin_ids[:n], vectors[:n], config)) for n in (100, 399, 400)]
    assert kinds == [ExactPinIndex, HnswPinIndex, IvfPinIndex]
    with pytest.raises(ValueError, match="ivf_min_pins"):
        IndexConfig(exact_max_pins=1000, ivf_min_pins=1000)


def test_exact_index_returns_the_true_top_k(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, queries = corpus
    got_ids, got_scores = ExactPinIndex.build(pin_ids, vectors, CONFIG).search(queries, 10)
    assert np.array_equal(got_ids, true_top_k(pin_ids, vectors, queries, 10))
    assert np.all(np.diff(got_scores, axis=1) <= 0)
    expected_scores = np.take_along_axis(
        queries @ vectors.T, np.argsort(-(queries @ vectors.T), axis=1)[:, :10], axis=1
    )
    np.testing.assert_allclose(got_scores, expected_scores, atol=1e-5)


def test_exclusions_are_honoured_and_the_rest_is_exact(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, queries = corpus
    index = ExactPinIndex.build(pin_ids, vectors, CONFIG)
    top = true_top_k(pin_ids, vectors, queries, 30)
    exclude = [set(top[b, ::2].tolist()) for b in range(len(queries))]  # every other of the top 30
    exclude[0] = set()
    got, _ = index.search(queries, 10, exclude=exclude)
    for b in range(len(queries)):
        assert not exclude[b] & set(got[b].tolist())
        assert got[b].tolist() == [p for p in top[b] if p not in exclude[b]][:10]


def test_rows_short_of_k_are_padded(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, queries = corpus
    index = ExactPinIndex.build(pin_ids[:5], vectors[:5], CONFIG)
    got, scores = index.search(queries[:1], 4, exclude=[{int(pin_ids[0]), int(pin_ids[1])}])
    assert (got[0, :3] >= 0).all() and got[0, 3] == -1 and scores[0, 3] == -np.inf


def test_bad_inputs_name_the_field(corpus: tuple[np.ndarray, ...]) -> None:
    pin_ids, vectors, queries = corpus
    index = ExactPinIndex.build(pin_ids, vectors, CONFIG)
    with pytest.raises(SchemaError, match="queries"):
        index.search(queries[:, :8], 5)
    with pytest.raises(ConfigError, match="exclude"):
        index.search(queries, 5, exclude=[set()])
    with pytest.raises(SchemaError, match="duplicates"):
        ExactPinIndex.build(np.array([1, 1]), vectors[:2], CONFIG)


def test_save_load_round_trip(corpus: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    pin_ids, vectors, queries = corpus
    for kind in (ExactPinIndex, HnswPinIndex, IvfPinIndex):
        index = kind.build(pin_ids, vectors, CONFIG)
        files = index.save(tmp_path / kind.kind)
        assert all((tmp_path / kind.kind / name).is_file() for name in files)
        loaded = load_pin_index(tmp_path / kind.kind)
        assert type(loaded) is kind and loaded.exact == kind.exact
        if isinstance(index, IvfPinIndex):  # nprobe lives in the meta file, not in faiss's
            assert loaded.nprobe == index.nprobe == {100: 4} and loaded.lists == index.lists
        for before, after in zip(
            index.search(queries, 20), loaded.search(queries, 20), strict=True
        ):
            assert np.array_equal(before, after)
    with pytest.raises(DataNotFoundError, match="pinfeed train retrieval"):
        load_pin_index(tmp_path / "nowhere")


def test_hnsw_recall_at_100_against_exact() -> None:
    vectors = clustered_unit_vectors(20_200, 32, 50, seed=2)
    pin_ids, corpus, queries = np.arange(20_000), vectors[:20_000], vectors[20_000:]
    config = IndexConfig(exact_max_pins=10_000)
    hnsw = build_pin_index(pin_ids, corpus, config)
    assert isinstance(hnsw, HnswPinIndex)
    approximate, _ = hnsw.search(queries, 100)
    exact, _ = ExactPinIndex.build(pin_ids, corpus, config).search(queries, 100)
    recall = np.mean([len(set(a) & set(e)) / 100 for a, e in zip(approximate, exact, strict=True)])
    assert recall >= 0.95, f"HNSW recall@100 {recall:.3f}"


@pytest.mark.parametrize(("codes", "min_recall"), [("sq8", 0.95), ("pq", 0.5)])
def test_ivf_recall_at_100_against_exact_and_its_memory(codes: str, min_recall: float) -> None:
    """SQ8 codes reach recall >= 0.95 at the nprobe tuned at build; 4-bit PQ trades recall for
    memory, and tuning stops where more lists stop helping."""
    vectors = clustered_unit_vectors(20_200, 32, 50, seed=3)
    pin_ids, corpus, queries = np.arange(20_000), vectors[:20_000], vectors[20_000:]
    config = IndexConfig(exact_max_pins=1000, ivf_min_pins=10_000, ivf_codes=codes)
    with pytest.warns(UserWarning, match="short of") if codes == "pq" else nullcontext():
        ivf = build_pin_index(pin_ids, corpus, config)
    assert isinstance(ivf, IvfPinIndex)
    approximate, _ = ivf.search(queries, 100, exclude=[{int(pin_ids[0])}] * len(queries))
    exact, _ = ExactPinIndex.build(pin_ids, corpus, config).search(
        queries, 100, exclude=[{int(pin_ids[0])}] * len(queries)
    )
    recall = np.mean([len(set(a) & set(e)) / 100 for a, e in zip(approximate, exact, strict=True)])
    assert recall >= min_recall, f"IVF {codes} recall@100 {recall:.3f}"
    # tuned: not every list, recall reached or at its plateau; a deeper fetch scans more lists
    depths = list(ivf.nprobe)
    assert depths == [100, 250, 500, 1000], depths
    assert 1 <= ivf.nprobe[100] < ivf.lists and ivf.nprobe[1000] <= ivf.lists
    assert all(ivf.nprobe[a] <= ivf.nprobe[b] for a, b in itertools.pairwise(depths))
    sq8_floor = len(corpus) * (32 + 8)  # E=32: one byte per dimension, plus an 8-byte id
    index_bytes = faiss.serialize_index(ivf.index).nbytes
    if codes == "sq8":
        assert sq8_floor <= index_bytes < 1.5 * sq8_floor  # codes, ids, small overhead
    else:  # 4 bits per pair of dimensions; fast-scan pads each list to blocks of 32 codes
        assert index_bytes < sq8_floor


def test_ivf_warns_when_the_corpus_does_not_cluster() -> None:
    """Uniform directions defeat any inverted file: tuning scans most lists, and says so."""
    vectors = np.random.default_rng(4).normal(size=(4_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    config = IndexConfig(exact_max_pins=100, ivf_min_pins=1000)
    with pytest.warns(UserWarning, match="barely cluster"):
        ivf = build_pin_index(np.arange(4_000), vectors, config)
    assert isinstance(ivf, IvfPinIndex) and ivf.nprobe[100] * 4 > ivf.lists


def test_ivf_warns_when_its_codes_cannot_reach_the_target() -> None:
    """PQ codes plateau below a 0.99 target: tuning stops there (not at every list) and warns."""
    vectors = clustered_unit_vectors(20_000, 32, 50, seed=5)
    config = IndexConfig(
        exact_max_pins=100, ivf_min_pins=1000, ivf_codes="pq", ivf_target_recall=0.99
    )
    with pytest.warns(UserWarning, match="short of ivf_target_recall"):
        ivf = build_pin_index(np.arange(20_000), vectors, config)
    assert isinstance(ivf, IvfPinIndex) and 1 <= ivf.nprobe[100] < ivf.lists


def test_ivf_scans_more_lists_for_a_deeper_fetch(corpus: tuple[np.ndarray, ...]) -> None:
    """A fetch uses the nprobe of the smallest tuned depth covering it; past the deepest, that
    nprobe per `depth` rows; never more than every list."""
    pin_ids, vectors, _ = corpus
    ivf = IvfPinIndex.build(pin_ids, vectors, IndexConfig(ivf_nprobe=2, ivf_lists=16))
    assert ivf.nprobe == {100: 2}
    assert [ivf.probes(fetch) for fetch in (10, 100, 101, 250, 5000)] == [2, 2, 4, 6, 16]
    table = IvfPinIndex(ivf.index, ivf.pin_ids, {100: 2, 500: 6})
    assert [table.probes(fetch) for fetch in (100, 101, 500, 501, 2000)] == [2, 6, 6, 12, 16]
    with pytest.raises(ConfigError, match="nprobe"):
        IvfPinIndex(ivf.index, ivf.pin_ids, {100: 0})
