"""The retrieval ablation: on a tiny world, the time split holds, recall is computed as defined,
and `evaluate_retrieval --events` writes the report in the issue's shape (JSON, Markdown, PNG);
on the small preset (the world docs/results.md reports), the dual positive signal finds
held-out conversions far more often than conversions alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from rich.console import Console

from evaluation.retrieval import AblationConfig, epochs_for_budget, recall_at_k, run_ablation
from evaluation.retrieval_data import time_split
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


def test_every_variant_gets_the_same_step_budget() -> None:
    assert epochs_for_budget(rows=690, batch_size=1024, steps=100) == 100
    assert epochs_for_budget(rows=16_358, batch_size=1024, steps=100) == 7
    assert epochs_for_budget(rows=10, batch_size=1024, steps=1) == 1


def test_time_split_keeps_labels_known_before_the_cutoff(tiny_home: ProjectHome) -> None:
    split = time_split(tiny_home, tiny_home.events, holdout_days=2)
    assert pc.max(split.train.column("positive_ts")).as_py() < split.cutoff
    for held in (split.conversions, split.long_clicks):
        assert held.num_rows == 0 or pc.min(held.column("event_timestamp")).as_py() >= split.cutoff
    assert set(pc.unique(split.conversions.column("positive_kind")).to_pylist()) <= {"conversion"}
    dwell = split.long_clicks.column("click_dwell_s").to_numpy()
    assert (dwell >= split.long_click_threshold_s).all()
    assert len(split.corpus) == 600


def test_evaluate_events_writes_the_report_shape(tiny_home: ProjectHome, tmp_path: Path) -> None:
    config = AblationConfig(
        variants=("conversions_only", "dual_positive"),
        holdout_days=2,
        steps=3,
        model=RetrievalSettings(batch_size=128, towers={"hidden_dims": (32,)}),
    )
    out = tmp_path / "reports" / "retrieval.json"
    report = evaluate_retrieval(tiny_home, out, seeds=2, events=tiny_home.events, config=config)

    data = json.loads(out.read_text())
    assert data == report.data
    assert set(data) == {"variants", "index", "config"}
    assert set(data["variants"]) == {"conversions_only", "dual_positive"}
    for metrics in data["variants"].values():
        assert set(metrics) == METRICS
        for stats in metrics.values():
            assert set(stats) == {"mean", "std"}
            assert stats["mean"] is None or 0.0 <= stats["mean"] <= 1.0
    assert set(data["index"]) == {"exact_recall@100", "ann_recall@100"}
    assert data["config"]["seeds"] == [0, 1] and data["config"]["heldout_conversions"] > 0
    assert data["config"]["events"] == str(tiny_home.events)
    table = report.markdown_path.read_text()
    assert "| conversions_only |" in table and "| dual_positive |" in table
    assert report.chart_path.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_dual_positive_beats_conversions_only_on_the_small_preset(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Seeds 0 and 1, the default budget: docs/results.md records 0.866 vs 0.662 Recall@100
    over 3 seeds (std about 0.02); a margin of 0.1 leaves room for seed noise, not for a
    broken weighting or mask."""
    home = make_home(tmp_path_factory.mktemp("small") / "home")
    run_pipeline(
        home, preset="small", console=Console(file=io.StringIO()), stop_after="training sets"
    )
    config = AblationConfig(variants=("conversions_only", "dual_positive"), seeds=2)
    report = run_ablation(time_split(home, home.events, config.holdout_days), config)
    recall = {name: v["recall@100"]["mean"] for name, v in report["variants"].items()}
    assert report["config"]["heldout_conversions"] >= 100
    assert recall["dual_positive"] > recall["conversions_only"] + 0.1, recall
