"""`pinfeed evaluate ranking`: how well the ranker separates and calibrates, per head, on
held-out impressions that were never downsampled.

Held-out rows: every impression of a run's test days (or validation days, for the utility
search), with point-in-time features through the same `ranking_v1` feature service as
training, built by the training-set code itself (`ranking_examples` with rate 1, then
`join_features`). The multi-task ranker is scored through its ONNX export (what serving runs);
the single-head baseline through torch; the LightGBM baseline (`evaluation.ranking_gbdt`, one
model per head on the run's own training rows) is fitted here and calibrated like the ranker.

Probabilities compared (H heads, N rows):
- raw: sigmoid(logits), the sampled-distribution score q;
- calibrated, simple: p = q / (q + (1 - q) / w), one w for every head;
- calibrated, exact (`ece_cal`, `brier_cal`, what serving applies): the per-head effective
  rate w_t of the manifest, which accounts for head-t negatives that carry another engagement
  and were therefore kept at rate 1.
ROC-AUC and PR-AUC do not change under either calibration (monotone per head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from pydantic import Field
from sklearn.metrics import average_precision_score, roc_auc_score

from evaluation.metrics import DEFAULT_BINS, expected_calibration_error, head_report
from evaluation.ranking_gbdt import GbdtConfig, fit_gbdt, gbdt_logits, training_rows
from evaluation.reliability import save_reliability_figure
from pinfeed.artifacts.layout import RunLayout
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import RankerInputs, RankerManifest, read_ranker_manifest
from pinfeed.artifacts.runs import LATEST, resolve_run
from pinfeed.calibration import calibrate_logits
from pinfeed.config import FrozenModel, load_yaml_section
from pinfeed.errors import DataNotFoundError
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from training.ranking.baseline import load_baseline
from training.ranking.config import CONFIG_SECTIONS
from training.ranking.features import label_array, ranker_arrays
from training.ranking.record import RankingRun, read_ranking_run
from training.ranking.steps import predict_logits

FIGURE_FILE = "ranking_reliability.png"
_SCORE_BATCH = 8_192


class RankingEvalConfig(FrozenModel):
    """The `evaluation:` section of configs/ranking.yaml."""

    ece_bins: int = Field(DEFAULT_BINS, ge=1, description="Equal-width ECE bins on [0, 1].")
    fine_bins: int = Field(
        100,
        ge=1,
        description="Finer equal-width bins for `ece_*_fine` and the figure: at base rates of "
        "1-5% every calibrated score falls in the first one or two of 15 bins, where ECE "
        "only compares means.",
    )
    feature_service: str = "ranking_v1"
    max_rows_per_query: int = Field(500_000, gt=0)
    gbdt: GbdtConfig = GbdtConfig()


@dataclass(frozen=True)
class HeldOutScores:
    """One held-out slice, scored. labels / logits [N, H] in ENGAGEMENTS order; baseline [N];
    inputs: the rows as the ranker took them."""

    labels: NDArray[np.float32]
    logits: NDArray[np.float32]
    baseline_logit: NDArray[np.float32]
    manifest: RankerManifest
    inputs: RankerInputs

    def calibrated(self) -> NDArray[np.float64]:
        """[N, H] probabilities with the manifest's per-head rates (serving's calibration)."""
        return calibrate_logits(self.logits, self.manifest.calibration_rate_vector())


def heldout_impressions(
    home: ProjectHome, start: datetime, end: datetime, config: RankingEvalConfig
) -> pd.DataFrame:
    """Every impression stamped in [start, end) with its point-in-time ranking features."""
    from feature_repo.store import open_store
    from pinfeed.events import read_event_set
    from training.training_sets import join_features, ranking_examples

    examples = ranking_examples(read_event_set(home.events), 1.0, seed=0)
    stamps = examples["event_timestamp"]
    window = examples.loc[(stamps >= start) & (stamps < end)]
    if window.empty:
        raise DataNotFoundError(
            f"events: no impressions in [{start.isoformat()}, {end.isoformat()}); the run's "
            "split and the event set disagree: retrain on this event set"
        )
    table = join_features(
        open_store(home), window, config.feature_service, config.max_rows_per_query
    )
    return table.to_pandas()


def ranking_run(home: ProjectHome, run_id: str = LATEST) -> RunLayout:
    """The run to evaluate: `run_id`, or the newest run holding a ranker."""
    return resolve_run(home.artifacts, run_id, need=("ranking",))


def score_slice(
    home: ProjectHome,
    layout: RunLayout,
    which: Literal["validation", "test"],
    config: RankingEvalConfig,
) -> HeldOutScores:
    """Score a run's validation or test days with the exported ranker and the baseline."""
    run = read_ranking_run(layout.ranking)
    start, end = (
        (run.split.train_end, run.split.validation_end)
        if which == "validation"
        else (run.split.validation_end, run.split.test_end)
    )
    frame = heldout_impressions(home, start, end, config)
    manifest = read_ranker_manifest(layout.ranking)
    arrays = ranker_arrays(frame, manifest.embedding_dim)
    session = inference_session(layout.ranker_model, prefer_gpu=False)
    logits = np.concatenate(
        [
            session.run([manifest.output_name], arrays.take(slice(i, i + _SCORE_BATCH)).feed())[0]
            for i in range(0, len(arrays), _SCORE_BATCH)
        ]
    )
    with torch.inference_mode():
        baseline = predict_logits(load_baseline(layout.baseline), arrays)[:, 0]
    return HeldOutScores(label_array(frame), logits, baseline, manifest, arrays)


def _sigmoid(logits: NDArray[np.floating]) -> NDArray[np.float64]:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def _mtl_heads(
    raw: dict[str, Any], simple: dict[str, Any], exact: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    heads = {}
    for head in ENGAGEMENTS:
        r, s, e = raw["heads"][head], simple["heads"][head], exact["heads"][head]
        heads[head] = {
            "roc_auc": r["roc_auc"],
            "pr_auc": r["pr_auc"],
            "brier_raw": r["brier"],
            "brier_cal": e["brier"],
            "ece_raw": r["ece"],
            "ece_cal": e["ece"],
            "log_loss_raw": r["log_loss"],
            "log_loss_cal": e["log_loss"],
            "brier_cal_simple": s["brier"],
            "ece_cal_simple": s["ece"],
            "log_loss_cal_simple": s["log_loss"],
            "positives": r["positives"],
            "base_rate": r["base_rate"],
            "mean_p_raw": r["mean_predicted"],
            "mean_p_cal": e["mean_predicted"],
            "mean_p_cal_simple": s["mean_predicted"],
        }
    return heads


def _single_head(labels: NDArray[np.float32], score: NDArray[np.float32]) -> dict[str, Any]:
    """The baseline's one score ranked against each head's labels (AUCs only: its score is
    no probability of any one engagement)."""
    return {
        head: {
            "roc_auc": float(roc_auc_score(labels[:, t], score)),
            "pr_auc": float(average_precision_score(labels[:, t], score)),
        }
        for t, head in enumerate(ENGAGEMENTS)
    }


def gbdt_report(
    home: ProjectHome, scores: HeldOutScores, run: RankingRun, config: RankingEvalConfig
) -> dict[str, dict[str, float]]:
    """LightGBM per head, fitted on the run's training rows (early-stopped on its validation
    days) and scored on the same held-out rows as the ranker, calibrated with the same
    per-head rates: {head: metrics, "trees": rounds kept}."""
    manifest = scores.manifest
    rows = training_rows(Path(run.training_set), run.split.train_end)
    validation = heldout_impressions(home, run.split.train_end, run.split.validation_end, config)
    models = fit_gbdt(rows, validation, manifest.embedding_dim, config.gbdt)
    logits = gbdt_logits(models, scores.inputs)
    calibrated = calibrate_logits(logits, manifest.calibration_rate_vector())
    raw = _sigmoid(logits)
    report = head_report(scores.labels, calibrated, config.ece_bins)["heads"]
    fine = _fine_ece(scores.labels, {"cal": calibrated}, config.fine_bins)
    return {
        head: {
            "roc_auc": m["roc_auc"],
            "pr_auc": m["pr_auc"],
            "brier_cal": m["brier"],
            "ece_cal": m["ece"],
            "log_loss_cal": m["log_loss"],
            "mean_p_cal": m["mean_predicted"],
            "mean_p_raw": float(raw[:, t].mean()),
            "trees": int(models[t].best_iteration_ or models[t].n_estimators),
            **fine[head],
        }
        for t, (head, m) in enumerate(report.items())
    }


def _fine_ece(
    labels: NDArray[np.float32], series: dict[str, NDArray[np.float64]], n_bins: int
) -> dict[str, dict[str, float]]:
    """{head: {"ece_<name>_fine": ...}} for each probability series [N, H]."""
    return {
        head: {
            f"ece_{name}_fine": expected_calibration_error(labels[:, t], p[:, t], n_bins)
            for name, p in series.items()
        }
        for t, head in enumerate(ENGAGEMENTS)
    }


def ranking_report(
    scores: HeldOutScores, run: RankingRun, config: RankingEvalConfig
) -> dict[str, Any]:
    """The report dict: {"mtl": {head: ...}, "single_head": {head: ...}, plus context keys}
    (`evaluate_ranking` adds "lightgbm": {head: ...})."""
    manifest, n_bins = scores.manifest, config.ece_bins
    series = {
        "raw": _sigmoid(scores.logits),
        "cal_simple": calibrate_logits(scores.logits, manifest.negative_sample_rate),
        "cal": scores.calibrated(),
    }
    raw, simple, exact = (head_report(scores.labels, p, n_bins) for p in series.values())
    fine = _fine_ece(scores.labels, series, config.fine_bins)
    mtl = {
        head: {**values, **fine[head]} for head, values in _mtl_heads(raw, simple, exact).items()
    }
    return {
        "mtl": mtl,
        "single_head": _single_head(scores.labels, scores.baseline_logit),
        "run_id": run.run_id,
        "rows": int(scores.labels.shape[0]),
        "period": [run.split.validation_end.isoformat(), run.split.test_end.isoformat()],
        "ece_bins": n_bins,
        "fine_bins": config.fine_bins,
        "calibration": {
            "sample_rate": manifest.negative_sample_rate,
            "effective_sample_rates": manifest.calibration_sample_rates,
            "cal": "exact (per-head effective rate); *_simple: one rate w for every head",
        },
        "checks": {
            head: {
                "ece_cal_at_most_third_of_raw": m["ece_cal"] <= m["ece_raw"] / 3.0,
                "brier_cal_not_worse": m["brier_cal"] <= m["brier_raw"],
            }
            for head, m in mtl.items()
        },
    }


def evaluate_ranking(
    home: ProjectHome,
    out: Path,
    *,
    run_id: str = LATEST,
    config: RankingEvalConfig | None = None,
) -> dict[str, Any]:
    """Score the test days of run `run_id` (default: the newest with a ranker), write the JSON
    report to `out` and the reliability figure beside it; return the report."""
    config = config or RankingEvalConfig()
    layout = ranking_run(home, run_id)
    run = read_ranking_run(layout.ranking)
    scores = score_slice(home, layout, "test", config)
    report = ranking_report(scores, run, config)
    report["lightgbm"] = gbdt_report(home, scores, run, config)
    report["gbdt_config"] = config.gbdt.model_dump()
    figure = out.parent / FIGURE_FILE
    save_reliability_figure(
        figure,
        scores.labels,
        _sigmoid(scores.logits),
        scores.calibrated(),
        n_bins=config.fine_bins,
    )
    report["figure"] = str(figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def load_eval_config(path: Path) -> RankingEvalConfig:
    """The `evaluation:` section of a ranking YAML (configs/ranking.yaml)."""
    return load_yaml_section(path, "evaluation", RankingEvalConfig, CONFIG_SECTIONS)
