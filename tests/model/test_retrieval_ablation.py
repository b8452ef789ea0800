"""The retrieval ablation: on a tiny world, the time split holds, recall is computed as defined,
every variant takes the same number of optimizer steps, a trained model beats the popularity
and random baselines, and `evaluate_retrieval --events` writes the report in the issue's shape
(JSON, Markdown, PNG); on the small preset (the world docs/results.md reports), the dual
positive signal finds held-out conversions far more often than conversions alone or either
baseline."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from rich.console import Console
from torch.optim.optimizer import register_optimizer_step_post_hook

from evaluation.retrieval import (
    AblationConfig,
    epochs_for_budget,
    recall_at_k,
    run_ablation,
    train_variant,
)
from evaluation.retrieval_data import RetrievalSplit, time_split
from evaluation.retrieval_report import evaluate_retrieval
from pinfeed.home import ProjectHome
from pinfeed_cli.pipeline import run_pipeline
from tests.support.homes import build_tiny_home, make_home
from training.retrieval.job_config import RetrievalSettings

METRICS = {
    "recall@50",
    "recall@100",
    "recall@500",
    "ann_recall@50",
    "ann_recall@100",
    "ann_recall@500",
    "long_click_recall@100",
}


TINY_MODEL = RetrievalSettings(batch_size=128, towers={"hidden_dims": (32,)})
LONG_CLICK_RECALL = "long_click_recall@100"
BASELINE_MARGIN = 0.2
SMALL_BASELINE_MARGIN = 0.3


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_tiny_home(tmp_path_factory.mktemp("ablation") / "home")


def test_recall_at_k_hand_computed() -> None:
    retrieved = np.array([[1, 2, 3], [4, 5, 6], [7, 8, -1]])
    targets = np.array([2, 6, 10])
    assert recall_at_k(retrieved, targets, 1) == 0.0
    assert recall_at_k(retrieved, targets, 2) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, targets, 3) == pytest.approx(2 / 3)
    assert np.isnan(recall_at_k(retrieved[:0], targets[:0], 3))


def test_epochs_for_budget_covers_the_steps_with_less_than_one_extra_epoch() -> None:
    assert epochs_for_budget(rows=690, batch_size=1024, steps=100) == 100  # 1 batch / epoch
    assert epochs_for_budget(rows=16_358, batch_size=1024, steps=100) == 7  # 16: 96 < 100 <= 112
    assert epochs_for_budget(rows=10, batch_size=1024, steps=1) == 1


def test_every_variant_takes_exactly_the_step_budget(
    tiny_home: ProjectHome, tmp_path: Path
) -> None:
    """conversions_only fits one batch per epoch and dual_positive needs many, yet both take
    exactly `steps` optimizer steps, counted by a hook on every torch optimizer step (not by
    the trainer's own counter); 7 is no multiple of either's batches per epoch."""
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    config = AblationConfig(holdout_days=2, steps=7, model=TINY_MODEL)
    counted: list[int] = []
    hook = register_optimizer_step_post_hook(lambda *_: counted.append(1))
    steps: dict[str, int] = {}
    epochs: dict[str, int] = {}
    try:
        for variant in ("conversions_only", "dual_positive"):
            before = len(counted)
            result, model_config = train_variant(split, config, variant, 0, tmp_path)
            steps[variant], epochs[variant] = len(counted) - before, model_config.epochs
            assert result.steps == steps[variant], variant
    finally:
        hook.remove()
    assert steps == {"conversions_only": 7, "dual_positive": 7}, epochs
    assert epochs["conversions_only"] > epochs["dual_positive"]


def test_time_split_keeps_labels_known_before_the_cutoff(tiny_home: ProjectHome) -> None:
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    assert pc.max(split.train.column("positive_ts")).as_py() < split.cutoff
    for held in (split.conversions, split.long_clicks):  # 7 and 57 on the tiny world
        assert held.num_rows > 0
        assert pc.min(held.column("event_timestamp")).as_py() >= split.cutoff
    assert set(pc.unique(split.conversions.column("positive_kind")).to_pylist()) <= {"conversion"}
    dwell = split.long_clicks.column("click_dwell_s").to_numpy()
    assert (dwell >= split.long_click_threshold_s).all()
    assert len(split.corpus) == 600


def test_evaluate_events_writes_the_report_shape(tiny_home: ProjectHome, tmp_path: Path) -> None:
    config = AblationConfig(
        variants=("conversions_only", "dual_positive"),
        holdout_days=2,
        steps=3,
        model=TINY_MODEL,
    )
    out = tmp_path / "reports" / "retrieval.json"
    report = evaluate_retrieval(tiny_home, out, seeds=2, events=tiny_home.events, config=config)

    data = json.loads(out.read_text())
    assert data == report.data
    assert set(data) == {"variants", "index", "config"}
    assert set(data["variants"]) == {"conversions_only", "dual_positive"}
    for metrics in data["variants"].values():  # both held-out sets are non-empty: no nulls
        assert set(metrics) == METRICS
        for stats in metrics.values():
            assert set(stats) == {"mean", "std"}
            assert isinstance(stats["mean"], float) and 0.0 <= stats["mean"] <= 1.0
            assert isinstance(stats["std"], float) and stats["std"] >= 0.0
    assert set(data["index"]) == {"exact_recall@100", "ann_recall@100"}
    assert all(isinstance(value, float) for value in data["index"].values())
    assert data["config"]["seeds"] == [0, 1] and data["config"]["heldout_conversions"] > 0
    assert data["config"]["steps_per_variant"] == {
        "conversions_only": [3, 3],
        "dual_positive": [3, 3],
    }
    assert data["config"]["events"] == str(tiny_home.events)
    table = report.markdown_path.read_text()
    assert "| conversions_only |" in table and "| dual_positive |" in table
    assert report.chart_path.read_bytes()[:4] == b"\x89PNG"


def popularity_top(split: RetrievalSplit, k: int = 100) -> np.ndarray:
    """[k] the pins with the most positives (of any kind) in the train split, most first."""
    pins, counts = np.unique(split.train.column("pin_id").to_numpy(), return_counts=True)
    return pins[np.argsort(-counts, kind="stable")[:k]]


def baseline_recalls(split: RetrievalSplit, held: pa.Table, k: int = 100) -> dict[str, float]:
    """Recall@k of `held`'s pins for the popularity baseline (every query gets
    `popularity_top`) and the random one (k pins drawn uniformly from the corpus: k / pins)."""
    targets = held.column("pin_id").to_numpy()
    popular = np.tile(popularity_top(split, k), (len(targets), 1))
    return {"popularity": recall_at_k(popular, targets, k), "random": k / len(split.corpus)}


def test_trained_retrieval_beats_popularity_and_random_on_the_tiny_world(
    tiny_home: ProjectHome,
) -> None:
    """dual_positive, seed 0, 100 steps of 128 rows. Measured: held-out long clicks (57) 0.91
    vs popularity 0.58 vs random 0.17. Margin 0.2: about three standard errors of the
    long-click recall inside the measured gap; a model that learned nothing does not pass.
    The tiny world holds out only 7 conversions (7/7 vs popularity 4/7), too few for a margin
    (two misses would fail it): the conversion bar is the small-preset test's."""
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    config = AblationConfig(variants=("dual_positive",), seeds=1, holdout_days=2, model=TINY_MODEL)
    trained = run_ablation(split, config)["variants"]["dual_positive"]
    assert split.long_clicks.num_rows >= 40
    for name, value in baseline_recalls(split, split.long_clicks).items():
        recall = trained[LONG_CLICK_RECALL]["mean"]
        assert recall > value + BASELINE_MARGIN, (name, value, trained)


@pytest.mark.slow
def test_dual_positive_beats_conversions_only_and_the_baselines_on_the_small_preset(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Seeds 0 and 1, the default budget: docs/results.md records 0.879 vs 0.662 Recall@100
    over 3 seeds (std about 0.02); a margin of 0.1 leaves room for seed noise, not for a
    broken weighting or mask. Against the baselines (measured: 0.885 vs popularity 0.243,
    random 100 / 8,000 = 0.0125), a margin of 0.3 is under half the gap to popularity and
    over ten standard errors of a recall over 152 conversions."""
    home = make_home(tmp_path_factory.mktemp("small") / "home")
    run_pipeline(
        home, preset="small", console=Console(file=io.StringIO()), stop_after="training sets"
    )
    config = AblationConfig(variants=("conversions_only", "dual_positive"), seeds=2)
    split = time_split(home, home.events, config.holdout_days)
    report = run_ablation(split, config)
    recall = {name: v["recall@100"]["mean"] for name, v in report["variants"].items()}
    baselines = baseline_recalls(split, split.conversions)
    assert report["config"]["heldout_conversions"] >= 100
    for name, value in baselines.items():
        assert recall["dual_positive"] > value + SMALL_BASELINE_MARGIN, (name, value, recall)
    assert recall["dual_positive"] > recall["conversions_only"] + 0.1, recall
