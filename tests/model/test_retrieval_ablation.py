"""The retrieval ablation: on a tiny world, the time split holds, recall is computed as defined,
every variant takes the same number of optimizer steps, a trained model beats the baselines
(recent popularity, item-kNN, ALS; random), and `evaluate_retrieval --events` writes the report
in the issue's shape (JSON, Markdown, PNG) with the baselines beside the variants; on the small
preset (the world docs/results.md reports), the dual positive signal finds held-out conversions
far more often than conversions alone or any baseline."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from rich.console import Console
from torch.optim.optimizer import register_optimizer_step_post_hook

from evaluation.retrieval import (
    AblationConfig,
    ConvergedConfig,
    epochs_for_budget,
    recall_at_k,
    run_ablation,
    train_variant,
)
from evaluation.retrieval_baselines import BASELINES
from evaluation.retrieval_data import time_split, validation_split
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
BASELINE_METRICS = {"recall@50", "recall@100", "recall@500", "long_click_recall@100"}


TINY_MODEL = RetrievalSettings(batch_size=128, towers={"hidden_dims": (32,)})
LONG_CLICK_RECALL = "long_click_recall@100"
BASELINE_MARGIN = 0.2
LEARNED_BASELINE_MARGIN = 0.1
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
    config = AblationConfig(holdout_days=2, steps=7, model=TINY_MODEL, converged=None)
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


def test_validation_split_looks_only_inside_the_train_part(tiny_home: ProjectHome) -> None:
    """Early stopping and ALS's grid see the last train day: fit rows are labelled before it,
    targets are recommended on it (conversions and long clicks, labels known before the
    cutoff), so nothing of the test days is looked at."""
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    fit, targets = validation_split(split, days=1)
    at = split.cutoff - timedelta(days=1)
    assert fit.num_rows > 0 and targets.num_rows > 0
    assert pc.max(fit.column("positive_ts")).as_py() < at
    assert pc.min(targets.column("event_timestamp")).as_py() >= at
    assert pc.max(targets.column("positive_ts")).as_py() < split.cutoff
    kinds = targets.column("positive_kind").to_pylist()
    dwell = targets.column("click_dwell_s").to_pylist()
    assert all(k == "conversion" or (k == "click" and d >= split.long_click_threshold_s)
               for k, d in zip(kinds, dwell, strict=True))  # fmt: skip


def test_evaluate_events_writes_the_report_shape(tiny_home: ProjectHome, tmp_path: Path) -> None:
    config = AblationConfig(
        variants=("conversions_only", "dual_positive"),
        holdout_days=2,
        steps=3,
        model=TINY_MODEL,
        converged=ConvergedConfig(every=2, patience=1, max_steps=6),
    )
    out = tmp_path / "reports" / "retrieval.json"
    report = evaluate_retrieval(tiny_home, out, seeds=2, events=tiny_home.events, config=config)

    data = json.loads(out.read_text())
    assert data == report.data
    assert set(data) == {"variants", "index", "config", "converged"}
    assert set(data["variants"]) == {"conversions_only", "dual_positive", *BASELINES}
    assert BASELINES == ("popularity", "item_knn", "als")
    for name, metrics in data["variants"].items():  # both held-out sets non-empty: no nulls
        assert set(metrics) == (BASELINE_METRICS if name in BASELINES else METRICS)
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
    selected = data["config"]["als_selected"]  # picked from the grid on the validation day
    assert selected["als_factors"] in (32, 64, 128)
    assert selected["als_regularization"] in (0.01, 0.05, 0.5)
    table = report.markdown_path.read_text()
    converged = data["converged"]  # early stopping: at most 6 steps, checked every 2
    assert set(converged["variants"]) == {"conversions_only", "dual_positive"}
    for name, metrics in converged["variants"].items():
        assert set(metrics) == METRICS
        assert all(0 < step <= 6 and step % 2 == 0 for step in converged["best_step"][name])
        assert all(2 <= steps <= 6 for steps in converged["steps"][name])
        for checks in converged["validation"][name]:
            assert [step for step, _ in checks] == list(range(2, 2 * len(checks) + 1, 2))
            assert all(0.0 <= recall <= 1.0 for _, recall in checks)
    assert "| dual_positive | " in table.split("Trained to convergence")[1]
    assert "| conversions_only |" in table and "| dual_positive |" in table
    assert "| item_knn (baseline) |" in table
    assert report.chart_path.read_bytes()[:4] == b"\x89PNG"


def test_trained_retrieval_beats_popularity_and_random_on_the_tiny_world(
    tiny_home: ProjectHome,
) -> None:
    """dual_positive, seed 0, 100 steps of 128 rows. Measured: held-out long clicks (57) 0.91
    vs popularity 0.58, item-kNN 0.63, ALS 0.46-0.49, random 0.17. Margin 0.2 over the best
    baseline would leave 0.08 of slack; 0.1 (two standard errors of a recall over 57 rows)
    against item-kNN and ALS, 0.2 against popularity and random: a model that learned
    nothing does not pass.
    The tiny world holds out only 7 conversions (7/7 vs popularity 4/7), too few for a margin
    (two misses would fail it): the conversion bar is the small-preset test's."""
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    config = AblationConfig(
        variants=("dual_positive",), seeds=1, holdout_days=2, model=TINY_MODEL, converged=None
    )
    variants = run_ablation(split, config)["variants"]
    assert split.long_clicks.num_rows >= 40
    recall = {name: v[LONG_CLICK_RECALL]["mean"] for name, v in variants.items()}
    for name in (*BASELINES, "random"):
        value = recall.get(name, 100 / len(split.corpus))
        margin = LEARNED_BASELINE_MARGIN if name in ("item_knn", "als") else BASELINE_MARGIN
        assert recall["dual_positive"] > value + margin, (name, value, recall)


@pytest.mark.slow
def test_dual_positive_beats_conversions_only_and_the_baselines_on_the_small_preset(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Seeds 0 and 1, the default budget: docs/results.md records 0.879 vs 0.662 Recall@100
    over 3 seeds (std about 0.02); a margin of 0.1 leaves room for seed noise, not for a
    broken weighting or mask. Against the baselines (measured: 0.885 vs popularity 0.243,
    random 100 / 8,000 = 0.0125), a margin of 0.3 is under half the gap to popularity and
    over ten standard errors of a recall over 152 conversions; against item-kNN (0.480) and
    ALS (0.669, its factors picked on the validation day), 0.1, about three standard errors,
    under half the gap to ALS."""
    home = make_home(tmp_path_factory.mktemp("small") / "home")
    run_pipeline(
        home, preset="small", console=Console(file=io.StringIO()), stop_after="training sets"
    )
    config = AblationConfig(variants=("conversions_only", "dual_positive"), seeds=2, converged=None)
    split = time_split(home, home.events, config.holdout_days)
    report = run_ablation(split, config)
    recall = {name: v["recall@100"]["mean"] for name, v in report["variants"].items()}
    assert report["config"]["heldout_conversions"] >= 100
    for name in (*BASELINES, "random"):
        value = recall.get(name, 100 / len(split.corpus))
        margin = LEARNED_BASELINE_MARGIN if name in ("item_knn", "als") else SMALL_BASELINE_MARGIN
        assert recall["dual_positive"] > value + margin, (name, value, recall)
    assert recall["dual_positive"] > recall["conversions_only"] + 0.1, recall
