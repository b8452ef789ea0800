"""`pinfeed optimize ranking`: tune the multi-task ranker with Ray Tune, on the same Ray.

What is searched (`search_space`): the shared MLP's width and depth (widths halve layer by
layer, as the default 256-128 does), the learning rate, and the negative downsampling rate,
as an extra keep-rate r on the training set's unengaged rows: the trial trains at the
effective rate w·r (w: the rate the training set was built with) and is calibrated for it.
Random search (seeded) with ASHA early stopping (`evaluation.tune`).

Rows (the ranking job config's own time split, `training.split`):
- train: the ranking training set's rows before the validation days (downsampled at w);
- validation: every impression of the validation days, never downsampled, with point-in-time
  features (`evaluation.ranking.heldout_impressions`); a trial reports the mean over heads of
  PR-AUC on them every `every` steps, keeps its best weights, and stops after `patience`
  checks without improvement (or where ASHA stops it);
- test: every impression of the test days; only the held-out comparison looks at them.

Writes:
- `<out>` (JSON): every trial (params, best validation PR-AUC, steps), the best one, and per
  head on the test days the tuned config, the default one (the job's shape and learning rate,
  early-stopped the same way) and LightGBM (`evaluation.ranking_gbdt`, fitted on the same rows):
  PR-AUC, ROC-AUC, calibrated ECE and Brier, mean over `refit_seeds` seeds;
- `<out>` with `.yaml`: the best config as the `training:` section of a ranking job config
  (`pinfeed train ranking --config`), its epochs the best step count over the batches of the
  rows the job would see; a comment names the training-set rate to build it on;
- `<out>` with `.png`: every trial's validation PR-AUC against its steps.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from numpy.typing import NDArray
from pydantic import Field
from sklearn.metrics import average_precision_score

from evaluation.metrics import head_report
from evaluation.ranking import RankingEvalConfig, heldout_impressions
from evaluation.ranking_gbdt import GbdtConfig, fit_gbdt, gbdt_logits, training_rows
from evaluation.tune import SearchSettings, run_search, trials_chart
from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.calibration import (
    calibrate_logits,
    downsample_negatives,
    fit_effective_sample_rates,
)
from pinfeed.config import FrozenModel
from pinfeed.errors import ConfigError, DataNotFoundError, UnavailableError
from pinfeed.events import read_event_meta
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from training.ranking.config import (
    RankerConfig,
    RankerOptions,
    RankingJobConfig,
)
from training.ranking.features import SOURCE_COLUMNS, TOPIC, label_array, ranker_arrays
from training.ranking.loss import build_loss
from training.ranking.model import MultiTaskRanker
from training.ranking.record import RankingSplit, time_split
from training.ranking.steps import RankerBatch, predict_logits, train_step
from training.training_sets import RANKING_NAME, read_training_set_meta

METRIC = "pr_auc"
"""What a trial reports: the mean over heads of validation PR-AUC."""


class RankingTuneSettings(SearchSettings):
    """The search's budget (defaults: the small preset's report) and the job config it starts
    from: its split, batch size, loss and weight decay hold for every trial, its shape and
    learning rate are the default arm, and the tuned YAML is it with the best trial's put in."""

    max_steps: int = Field(2000, gt=0, description="ASHA's max_t, in optimizer steps.")
    grace_steps: int = Field(200, gt=0, description="ASHA's grace period, in optimizer steps.")
    every: int = Field(100, gt=0, description="Optimizer steps between validation checks.")
    patience: int = Field(4, gt=0, description="Checks without a better PR-AUC before stopping.")
    max_validation_rows: int = Field(
        200_000, gt=0, description="A seeded sample of the validation days beyond this."
    )
    refit_seeds: int = Field(2, ge=1, description="Seeds of the held-out comparison.")
    lightgbm: bool = Field(True, description="Fit LightGBM on the same rows for the table.")
    job: RankingJobConfig = RankingJobConfig()


class RankerTrial(FrozenModel):
    """What one trial trains: the ranker's shape, its learning rate, an extra keep-rate."""

    model: RankerOptions
    learning_rate: float = Field(gt=0)
    keep_rate: float = Field(
        1.0, gt=0, le=1, description="Extra keep-rate of unengaged rows: trains at rate w·r."
    )


@dataclass(frozen=True)
class LabelledRows:
    """Ranker inputs [N, ...] and their labels [N, H] (ENGAGEMENTS order)."""

    inputs: RankerInputs
    labels: NDArray[np.float32]

    @classmethod
    def of(cls, frame: pd.DataFrame, embedding_dim: int) -> LabelledRows:
        return cls(ranker_arrays(frame, embedding_dim), label_array(frame))

    def take(self, rows: NDArray[np.int64]) -> LabelledRows:
        return LabelledRows(self.inputs.take(rows), self.labels[rows])

    def expected_rows(self, keep_rate: float) -> float:
        """How many rows survive an extra keep-rate on the unengaged ones, in expectation."""
        engaged = self.labels.any(axis=1)
        return float(engaged.sum() + keep_rate * (~engaged).sum())


@dataclass(frozen=True)
class TuneRows:
    """What every trial reads (shipped once through Ray's object store)."""

    train: LabelledRows
    validation: LabelledRows
    sample_rate: float
    """w: the rate the training set kept unengaged impressions at."""
    embedding_dim: int
    num_topics: int


@dataclass(frozen=True)
class RankerFit:
    """An early-stopped ranker with its best weights loaded, and how it got there."""

    model: MultiTaskRanker
    best_step: int
    checks: list[tuple[int, float]]
    sample_rate: float
    """w·r: the rate its training rows kept unengaged impressions at."""
    calibration_rates: NDArray[np.float64]
    """[H] per-head effective rates of those rows (what serving's calibration applies)."""


def default_trial(job: RankingJobConfig) -> RankerTrial:
    """The default arm: the job config's shape and learning rate, at the set's own rate."""
    return RankerTrial(model=job.model, learning_rate=job.learning_rate)


def search_space() -> dict[str, Any]:
    """Ray Tune's distributions over the settings `trial_config` knows."""
    from ray import tune

    return {
        "learning_rate": tune.loguniform(1e-4, 1e-2),
        "width": tune.choice([64, 128, 256, 512]),
        "depth": tune.choice([1, 2, 3]),
        "keep_rate": tune.loguniform(0.1, 1.0),
    }


def trial_config(params: dict[str, Any]) -> RankerTrial:
    """One trial's parameters as a `RankerTrial` (widths halve per layer, at least 16)."""
    width, depth = int(params["width"]), int(params["depth"])
    hidden = tuple(max(16, width >> layer) for layer in range(depth))
    return RankerTrial(
        model=RankerOptions(hidden_dims=hidden),
        learning_rate=float(params["learning_rate"]),
        keep_rate=float(params["keep_rate"]),
    )


def mean_pr_auc(model: torch.nn.Module, rows: LabelledRows) -> float:
    """Mean over heads of PR-AUC (heads without a positive in `rows` left out)."""
    logits = predict_logits(model, rows.inputs)
    scores = [
        average_precision_score(rows.labels[:, t], logits[:, t])
        for t in range(len(ENGAGEMENTS))
        if rows.labels[:, t].any()
    ]
    return float(np.mean(scores)) if scores else float("nan")


def fit_ranker(
    data: TuneRows,
    trial: RankerTrial,
    settings: RankingTuneSettings,
    seed: int,
    report: Callable[[int, float], None] | None = None,
) -> RankerFit:
    """Train on the train rows (kept at rate `trial.keep_rate`) with Adam, shuffled epochs of
    `batch_size`; check validation PR-AUC every `every` steps (passed to `report`); stop at
    `max_steps` or after `patience` checks without improvement; keep the best weights."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(downsample_negatives(data.train.labels, trial.keep_rate, rng))
    rows = data.train.take(keep)
    torch.manual_seed(seed)
    config = RankerConfig(
        embedding_dim=data.embedding_dim,
        num_topics=data.num_topics,
        **trial.model.model_dump(),
    )
    model = MultiTaskRanker(config)
    model.fit_normalizer(torch.from_numpy(rows.inputs.dense))
    loss = build_loss(settings.job.loss)
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss.parameters()],
        lr=trial.learning_rate,
        weight_decay=settings.job.weight_decay,
    )
    batch_size = settings.job.batch_size
    checks: list[tuple[int, float]] = []
    best_state, best_score, best_step, since_best = None, -math.inf, 0, 0
    order, cursor = rng.permutation(len(keep)), 0
    for step in range(1, settings.max_steps + 1):
        if cursor >= len(order):
            order, cursor = rng.permutation(len(keep)), 0
        batch = rows.take(order[cursor : cursor + batch_size])
        cursor += batch_size
        train_step(model, loss, optimizer, RankerBatch.from_arrays(batch.inputs, batch.labels))
        if step % settings.every and step != settings.max_steps:
            continue
        score = mean_pr_auc(model, data.validation)
        checks.append((step, score))
        if report is not None:
            report(step, score)
        if score > best_score:
            best_state, best_score, best_step, since_best = (
                copy.deepcopy(model.state_dict()), score, step, 0
            )  # fmt: skip
        else:
            since_best += 1
            if since_best >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    sample_rate = data.sample_rate * trial.keep_rate
    return RankerFit(
        model=model.eval(),
        best_step=best_step,
        checks=checks,
        sample_rate=sample_rate,
        calibration_rates=fit_effective_sample_rates(rows.labels, sample_rate),
    )


def _trial(params: dict[str, Any], data: TuneRows, settings: RankingTuneSettings) -> None:
    """One Ray Tune trial: train with early stopping, reporting every check to Tune."""
    from ray import tune

    def report(step: int, score: float) -> None:
        tune.report({METRIC: score, "step": step})

    fit_ranker(data, trial_config(params), settings, settings.seed, report)


def _sample(rows: LabelledRows, limit: int, seed: int) -> LabelledRows:
    if len(rows.labels) <= limit:
        return rows
    picked = np.sort(np.random.default_rng(seed).choice(len(rows.labels), limit, replace=False))
    return rows.take(picked)


def load_rows(
    home: ProjectHome, settings: RankingTuneSettings, config: RankingEvalConfig
) -> tuple[TuneRows, LabelledRows, RankingSplit, dict[str, pd.DataFrame]]:
    """The search's rows, the test days' rows, the split, and the train and validation
    frames (LightGBM takes columns)."""
    events = read_event_meta(home.events)
    if not events.has_impressions:
        raise DataNotFoundError(
            f"{home.events}: an event set without impression rows has no unengaged "
            "impressions; a ranker (and its search) needs them"
        )
    path = home.training_sets / f"{RANKING_NAME}.parquet"
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no ranking training set; build it with `pinfeed features training-sets`"
        )
    split = time_split(events.end.astimezone(UTC), settings.job.split)
    if split.train_end <= events.start:
        held = settings.job.split.validation_days + settings.job.split.test_days
        raise ConfigError(
            f"training.split: {held} validation and test days leave no training days in the "
            f"event set's {events.start:%Y-%m-%d} to {events.end:%Y-%m-%d}; shorten the split "
            "or generate more days"
        )
    train = training_rows(path, split.train_end)
    if train.empty:
        raise DataNotFoundError(
            f"{path}: no rows before {split.train_end.isoformat()}; generate more days or "
            "shorten the split"
        )
    validation = heldout_impressions(home, split.train_end, split.validation_end, config)
    test = heldout_impressions(home, split.validation_end, split.test_end, config)
    dim = events.embedding_dim
    rows = TuneRows(
        train=LabelledRows.of(train, dim),
        validation=_sample(
            LabelledRows.of(validation, dim), settings.max_validation_rows, settings.seed
        ),
        sample_rate=float(read_training_set_meta(path).negative_sample_rate or 1.0),
        embedding_dim=dim,
        num_topics=max(int(train[SOURCE_COLUMNS[TOPIC]].max()) + 1, 1),
    )
    return rows, LabelledRows.of(test, dim), split, {"train": train, "validation": validation}


def _test_metrics(
    labels: NDArray[np.float32],
    logits: NDArray[np.float32],
    rates: NDArray[np.float64],
    n_bins: int,
) -> dict[str, dict[str, float]]:
    """Per head: PR-AUC, ROC-AUC, calibrated ECE and Brier of `logits` on the test rows."""
    heads = head_report(labels, calibrate_logits(logits, rates), n_bins)["heads"]
    return {
        head: {
            "pr_auc": m["pr_auc"],
            "roc_auc": m["roc_auc"],
            "ece_cal": m["ece"],
            "brier_cal": m["brier"],
        }
        for head, m in heads.items()
    }


def _mean_over_seeds(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        head: {name: float(np.mean([r[head][name] for r in runs])) for name in runs[0][head]}
        for head in runs[0]
    }


def held_out(
    data: TuneRows,
    test: LabelledRows,
    trial: RankerTrial,
    settings: RankingTuneSettings,
    n_bins: int,
) -> dict[str, Any]:
    """`trial` early-stopped with seeds 0..refit_seeds-1, scored on the test days: per-head
    metrics (mean over seeds), the mean PR-AUC over heads, and each seed's best step."""
    runs, steps = [], []
    for seed in range(settings.refit_seeds):
        fit = fit_ranker(data, trial, settings, seed)
        logits = predict_logits(fit.model, test.inputs)
        runs.append(_test_metrics(test.labels, logits, fit.calibration_rates, n_bins))
        steps.append(fit.best_step)
    heads = _mean_over_seeds(runs)
    return {
        "heads": heads,
        "mean_pr_auc": float(np.mean([m["pr_auc"] for m in heads.values()])),
        "best_steps": steps,
    }


def lightgbm_held_out(
    frames: dict[str, pd.DataFrame],
    data: TuneRows,
    test: LabelledRows,
    config: GbdtConfig,
    n_bins: int,
) -> dict[str, Any]:
    """LightGBM per head on the same train rows (early-stopped on the validation days),
    calibrated with the training set's per-head rates, scored on the test days."""
    models = fit_gbdt(frames["train"], frames["validation"], data.embedding_dim, config)
    rates = fit_effective_sample_rates(data.train.labels, data.sample_rate)
    heads = _test_metrics(test.labels, gbdt_logits(models, test.inputs), rates, n_bins)
    return {
        "heads": heads,
        "mean_pr_auc": float(np.mean([m["pr_auc"] for m in heads.values()])),
        "trees": [int(m.best_iteration_ or m.n_estimators) for m in models],
    }


def steps_per_epoch(data: TuneRows, trial: RankerTrial, batch_size: int) -> int:
    """Batches in one epoch of a training set at rate w·r (its engaged rows plus r of the
    rest, in expectation)."""
    return max(1, math.ceil(data.train.expected_rows(trial.keep_rate) / batch_size))


def job_config(
    data: TuneRows, trial: RankerTrial, steps: int, settings: RankingTuneSettings
) -> RankingJobConfig:
    """The starting job config with the tuned trial put in: its shape, its learning rate,
    and epochs = `steps` over `steps_per_epoch`, to the nearest (the job trains whole epochs
    and keeps its last one, so rounding up could add most of an epoch)."""
    per_epoch = steps_per_epoch(data, trial, settings.job.batch_size)
    return settings.job.model_copy(
        update={
            "model": trial.model,
            "learning_rate": trial.learning_rate,
            "epochs": max(1, round(steps / per_epoch)),
            "seed": settings.seed,
        }
    )


def _job_yaml(config: RankingJobConfig, data: TuneRows, trial: RankerTrial, steps: int) -> str:
    rate = data.sample_rate * trial.keep_rate
    per_epoch = steps_per_epoch(data, trial, config.batch_size)
    return (
        "# Written by `pinfeed optimize ranking` (evaluation/ranking_tune.py): the best trial's "
        f"settings.\n# Its best check was at step {steps}; {config.epochs} epoch(s) of "
        f"{per_epoch} batches = {config.epochs * per_epoch} steps.\n"
        f"# It trained at negative sample rate {rate:.4g} (the training set's "
        f"{data.sample_rate:g} x keep-rate {trial.keep_rate:.3g}): build the set with\n"
        f"#   pinfeed features training-sets --negative-sample-rate {rate:.4g}\n"
        "# before `pinfeed train ranking --config` this file.\n"
        + yaml.safe_dump({"training": config.model_dump(mode="json")}, sort_keys=False)
    )


def tune_ranking(
    home: ProjectHome,
    out: Path,
    settings: RankingTuneSettings | None = None,
    config: RankingEvalConfig | None = None,
) -> dict[str, Any]:
    """Search, compare the best config with the default and LightGBM on the test days, write
    the three files (module docstring); return the report."""
    from ray import tune

    settings = settings or RankingTuneSettings()
    config = config or RankingEvalConfig()
    data, test, split, frames = load_rows(home, settings, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_parameters(_trial, data=data, settings=settings)
    storage = out.parent / "tune"
    trials = run_search(
        trainable, search_space(), settings, metric=METRIC, storage=storage, name="ranking-tune"
    )
    best = next((t for t in trials if f"best_{METRIC}" in t), None)
    if best is None:
        raise UnavailableError(
            f"every trial failed; the first: {trials[0].get('error')}. Each trial's log is "
            f"under {storage}"
        )
    tuned = trial_config(best["params"])
    default = default_trial(settings.job)
    report: dict[str, Any] = {
        "trials": trials,
        "best": best | {"config": tuned.model_dump(mode="json")},
        "held_out": {
            "tuned": held_out(data, test, tuned, settings, config.ece_bins),
            "default": held_out(data, test, default, settings, config.ece_bins),
            "default_config": default.model_dump(mode="json"),
            "rows": len(test.labels),
            "seeds": list(range(settings.refit_seeds)),
            "ece_bins": config.ece_bins,
        },
        "rows": {"train": len(data.train.labels), "validation": len(data.validation.labels)},
        "sample_rate": data.sample_rate,
        "split": split.model_dump(mode="json"),
        "settings": settings.model_dump(mode="json"),
    }
    if settings.lightgbm:
        report["held_out"]["lightgbm"] = lightgbm_held_out(
            frames, data, test, config.gbdt, config.ece_bins
        )
    out.write_text(json.dumps(report, indent=2) + "\n")
    trials_chart(trials, out.with_suffix(".png"), "validation PR-AUC, mean over heads")
    job = job_config(data, tuned, best["best_step"], settings)
    out.with_suffix(".yaml").write_text(_job_yaml(job, data, tuned, best["best_step"]))
    return report
