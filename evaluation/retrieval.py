"""The retrieval ablation: which positive set finds the pins users will convert on?

Six variants (`training.retrieval.config.Variant`) are trained the same way on the same time
split (`evaluation.retrieval_data`) for several seeds, and each is scored on the held-out
period over the whole pin corpus:

- Recall@K (K = 50, 100, 500) of held-out conversions: the share of held-out conversion rows
  whose pin is among the K pins retrieved for that row's query (user features at that time +
  query pin). No exclusion of already-engaged pins: a user may convert on a pin they clicked.
- the same through an HNSW index (`ann_recall@K`), against exact search, to show the loss of
  the approximate index (the "index" entry reports it for `dual_positive`);
- Recall@100 of held-out long clicks.

Beside them, the baselines of `evaluation.retrieval_baselines` (recent popularity, item-kNN,
implicit ALS), fitted on the same train positives and scored on the same queries and metrics
(no index: they rank the whole corpus exactly). Popularity and item-kNN are deterministic and
scored once; ALS once per seed.

How the models are trained: in-process, with the plain torch loop
(`training.retrieval.train_step.train_on_parquet`), which calls the same `train_step` as the
Ray Train loop (`training.retrieval.ray_loop`) on the same filtered rows (`weighted_rows`).
Eighteen small models through Ray Train would add worker start-up and checkpoint I/O to each
without changing what is computed. Every variant gets exactly the same number of optimizer
steps (`steps`): a variant's epochs are `ceil(steps / batches per epoch)` and training stops at
the budget inside the last epoch, so `conversions_only` (a few hundred rows, one batch per
epoch) is not cut off after a handful of updates and the larger variants get no extra ones.
The `_aux` variants also train on every engagement row (for their engagement task), so their
batches hold fewer softmax positives than their base variant's: under the same step budget
`conversions_aux` sees a fraction of the conversions per step that `conversions_only` sees.

Converged table (`converged`): the same variants trained to convergence instead, what a user
gets. The train part is split once more by time (`evaluation.retrieval_data.validation_split`:
the last `validation_days` before the cutoff); each model trains on the earlier rows, is
checked every `every` steps by its Recall@100 of the validation conversions and long clicks,
stops after `patience` checks without improvement (or at `max_steps`). With `refit` (the
default) the model is then trained again on all train rows for the best check's number of
steps (the validation days are the newest data: a user would not leave them out); without,
the best checked model itself. Either is scored on the held-out days like the equal-budget
ones.

Notation: Q held-out queries, K retrieved pins, E embedding width.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import BaseModel, ConfigDict, Field

from evaluation.retrieval_baselines import BaselineSettings, fit_baseline, interactions
from evaluation.retrieval_data import RetrievalSplit, validation_split
from pinfeed.artifacts.index import ExactPinIndex, HnswPinIndex, IndexConfig, PinIndex
from pinfeed.errors import DataNotFoundError
from training.retrieval.config import RetrievalConfig, Variant
from training.retrieval.corpus import embed_pins
from training.retrieval.dataset import sized_towers, weighted_rows
from training.retrieval.features import batch_from_table
from training.retrieval.job_config import RetrievalSettings
from training.retrieval.model import RetrievalModel
from training.retrieval.train_step import EarlyStopping, TrainResult, train_on_parquet

VARIANTS: tuple[Variant, ...] = get_args(Variant)
INDEX_VARIANT: Variant = "dual_positive"


class ConvergedConfig(BaseModel):
    """The converged table's early stopping (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    validation_days: float = Field(1.0, gt=0, description="The last train days checked.")
    every: int = Field(25, gt=0, description="Optimizer steps between checks.")
    patience: int = Field(4, gt=0, description="Checks without improvement before stopping.")
    max_steps: int = Field(3000, gt=0, description="The cap, if it never stops improving.")
    k: int = Field(100, gt=0, description="K of the validation recall.")
    refit: bool = Field(True, description="Retrain on all train rows for the best step count.")


class AblationConfig(BaseModel):
    """How the ablation is run. Defaults: the small preset's report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variants: tuple[Variant, ...] = VARIANTS
    seeds: int = Field(3, ge=1, description="Seeds 0..seeds-1 per variant.")
    holdout_days: float = Field(3.0, gt=0, description="The last days held out for evaluation.")
    ks: tuple[int, ...] = Field((50, 100, 500), description="K of conversion Recall@K.")
    long_click_k: int = Field(100, gt=0, description="K of long-click recall.")
    steps: int = Field(100, gt=0, description="Optimizer steps per model (same for all).")
    model: RetrievalSettings = RetrievalSettings()
    baselines: BaselineSettings = BaselineSettings()
    converged: ConvergedConfig | None = Field(
        ConvergedConfig(), description="The converged table; None: equal budget only."
    )
    ann: IndexConfig = Field(
        IndexConfig(exact_max_pins=0, hnsw_m=16, hnsw_ef_construction=64, hnsw_ef_search=64),
        description="The approximate index compared with exact search.",
    )


def recall_at_k(retrieved: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of rows whose target is among the first k retrieved ids.

    Args:
        retrieved: [Q, >= k] pin ids, best first (-1 padding never matches).
        targets: [Q] the held-out pin of each row.
    """
    if len(targets) == 0:
        return float("nan")
    return float((retrieved[:, :k] == targets[:, None]).any(axis=1).mean())


@torch.no_grad()
def query_embeddings(model: RetrievalModel, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(query embeddings [Q, E], target pin ids [Q]) of held-out training-set rows."""
    batch = batch_from_table(rows)
    model.eval()
    query = model.query_tower(
        batch.user_id, batch.user_dense, batch.query_pin_id, batch.query_content
    )
    return query.numpy(), batch.pin_id.numpy()


def epochs_for_budget(rows: int, batch_size: int, steps: int) -> int:
    """Epochs that give at least `steps` optimizer steps over `rows` rows."""
    return max(1, math.ceil(steps / max(1, math.ceil(rows / batch_size))))


def _prepare(
    split: RetrievalSplit,
    train: pa.Table,
    config: AblationConfig,
    variant: Variant,
    seed: int,
    steps: int,
    path: Path,
) -> RetrievalConfig:
    """Write `variant`'s weighted rows of `train` to `path`; the model config for `steps`."""
    towers = sized_towers(split.corpus, split.user_ids, **config.model.towers.model_dump())
    base = config.model.sized(towers).model_copy(update={"variant": variant, "seed": seed})
    rows = weighted_rows(train, base)
    if rows.num_rows == 0:
        raise DataNotFoundError(f"variant {variant}: no training positives before the cutoff")
    epochs = epochs_for_budget(rows.num_rows, base.batch_size, steps)
    pq.write_table(rows, path)
    return RetrievalConfig.model_validate(base.model_dump() | {"epochs": epochs})


def train_variant(
    split: RetrievalSplit, config: AblationConfig, variant: Variant, seed: int, work_dir: Path
) -> tuple[TrainResult, RetrievalConfig]:
    """One model of the ablation, trained for `config.steps` optimizer steps on the split's
    train rows with the plain loop."""
    path = work_dir / f"{variant}-{seed}.parquet"
    model_config = _prepare(split, split.train, config, variant, seed, config.steps, path)
    return train_on_parquet(path, model_config, max_steps=config.steps), model_config


def validation_recall(
    model: RetrievalModel, split: RetrievalSplit, targets: pa.Table, k: int
) -> float:
    """Recall@k of `targets` over the corpus, exact search (the early-stopping score)."""
    embeddings = embed_pins(model.pin_tower, split.corpus)
    queries, pins = query_embeddings(model, targets)
    top = torch.topk(torch.from_numpy(queries @ embeddings.T), min(k, len(embeddings))).indices
    retrieved = split.corpus.pin_id.numpy()[top.numpy()]
    return recall_at_k(retrieved, pins, k)


def train_converged(
    split: RetrievalSplit,
    config: AblationConfig,
    variant: Variant,
    seed: int,
    work_dir: Path,
    on_check: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """One model trained until its validation recall stops improving (module docstring);
    `on_check` gets every check's (step, recall) (Ray Tune's report)."""
    converged = config.converged or ConvergedConfig()
    fit, targets = validation_split(split, converged.validation_days)
    if targets.num_rows == 0:
        raise DataNotFoundError(
            f"no conversions or long clicks in the last {converged.validation_days} train "
            "days to stop on; lower converged.validation_days or hold out fewer days"
        )
    path = work_dir / f"converged-{variant}-{seed}.parquet"
    model_config = _prepare(split, fit, config, variant, seed, converged.max_steps, path)

    def score(model: RetrievalModel, step: int) -> float:
        recall = validation_recall(model, split, targets, converged.k)
        if on_check is not None:
            on_check(step, recall)
        return recall

    stopping = EarlyStopping(score, every=converged.every, patience=converged.patience)
    return train_on_parquet(path, model_config, converged.max_steps, stopping)


def score_model(
    model: RetrievalModel, split: RetrievalSplit, config: AblationConfig
) -> dict[str, float]:
    """Recall of one trained model through an exact and an approximate index."""
    pin_ids = split.corpus.pin_id.numpy()
    embeddings = embed_pins(model.pin_tower, split.corpus)
    exact: PinIndex = ExactPinIndex.build(pin_ids, embeddings, config.ann)
    ann: PinIndex = HnswPinIndex.build(pin_ids, embeddings, config.ann)
    queries, targets = query_embeddings(model, split.conversions)
    top = max(config.ks)
    exact_ids, _ = exact.search(queries, top)
    ann_ids, _ = ann.search(queries, top)
    scores: dict[str, float] = {}
    for k in config.ks:
        scores[f"recall@{k}"] = recall_at_k(exact_ids, targets, k)
        scores[f"ann_recall@{k}"] = recall_at_k(ann_ids, targets, k)
    long_queries, long_targets = query_embeddings(model, split.long_clicks)
    long_ids, _ = exact.search(long_queries, config.long_click_k)
    scores[f"long_click_recall@{config.long_click_k}"] = recall_at_k(
        long_ids, long_targets, config.long_click_k
    )
    return scores


def select_als(split: RetrievalSplit, config: AblationConfig) -> BaselineSettings:
    """ALS's factors and regularisation with the best Recall@100 on the validation day
    (`validation_split`, as the converged towers use it), fitted on the rows before it."""
    settings = config.baselines
    days = (config.converged or ConvergedConfig()).validation_days
    fit, targets = validation_split(split, days)
    if targets.num_rows == 0 or fit.num_rows == 0:
        return settings
    at = split.cutoff - timedelta(days=days)
    data = interactions(fit, split.corpus.pin_id.numpy(), at, settings.recent_days)
    pins = targets.column("pin_id").to_numpy()
    best: tuple[float, BaselineSettings] | None = None
    for factors in settings.als_factor_grid:
        for regularization in settings.als_regularization_grid:
            candidate = settings.model_copy(
                update={"als_factors": factors, "als_regularization": regularization}
            )
            recall = recall_at_k(fit_baseline("als", data, candidate, 0)(targets, 100), pins, 100)
            if best is None or recall > best[0]:
                best = (recall, candidate)
    return best[1] if best else settings


def score_baselines(
    split: RetrievalSplit, config: AblationConfig
) -> tuple[dict[str, dict[str, list]], BaselineSettings]:
    """Each baseline's recalls on the split's held-out rows, {name: {metric: [per seed]}},
    and the settings they ran with (ALS's picked on the validation day)."""
    data = interactions(
        split.train, split.corpus.pin_id.numpy(), split.cutoff, config.baselines.recent_days
    )
    conversions = split.conversions.column("pin_id").to_numpy()
    long_clicks = split.long_clicks.column("pin_id").to_numpy()
    long_k = config.long_click_k
    settings = select_als(split, config) if "als" in config.baselines.names else config.baselines
    out: dict[str, dict[str, list]] = {}
    for name in config.baselines.names:
        runs: dict[str, list] = {}
        for seed in range(config.seeds if name == "als" else 1):
            retrieve = fit_baseline(name, data, settings, seed)
            ids = retrieve(split.conversions, max(config.ks))
            for k in config.ks:
                runs.setdefault(f"recall@{k}", []).append(recall_at_k(ids, conversions, k))
            long_ids = retrieve(split.long_clicks, long_k)
            runs.setdefault(f"long_click_recall@{long_k}", []).append(
                recall_at_k(long_ids, long_clicks, long_k)
            )
        out[name] = runs
    return out, settings


def _mean_std(values: list[float]) -> dict[str, float | None]:
    """Mean and std over seeds; None (JSON null) when there was nothing held out to score."""
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).any():
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(array)), "std": float(np.std(array))}


def run_ablation(split: RetrievalSplit, config: AblationConfig) -> dict[str, Any]:
    """Train and score every variant for every seed; the report in the issue's JSON shape."""
    per_variant: dict[str, dict[str, list[float]]] = {}
    epochs: dict[str, int] = {}
    steps: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="retrieval-ablation-") as work:
        for variant in config.variants:
            runs: dict[str, list[float]] = {}
            for seed in range(config.seeds):
                result, model_config = train_variant(split, config, variant, seed, Path(work))
                epochs[variant] = model_config.epochs
                steps.setdefault(variant, []).append(result.steps)
                for name, value in score_model(result.model, split, config).items():
                    runs.setdefault(name, []).append(value)
            per_variant[variant] = runs
    variants = {
        name: {metric: _mean_std(values) for metric, values in runs.items()}
        for name, runs in per_variant.items()
    }
    baselines, settings = score_baselines(split, config)
    for name, runs in baselines.items():
        variants[name] = {metric: _mean_std(values) for metric, values in runs.items()}
    index_runs = per_variant.get(INDEX_VARIANT) or next(iter(per_variant.values()))
    report = {
        "variants": variants,
        "index": {
            "exact_recall@100": _mean_std(index_runs["recall@100"])["mean"],
            "ann_recall@100": _mean_std(index_runs["ann_recall@100"])["mean"],
        },
        "config": _report_config(split, config, epochs, steps)
        | {"als_selected": settings.model_dump(include={"als_factors", "als_regularization"})},
    }
    if config.converged is not None:
        try:
            report["converged"] = run_converged(split, config)
        except DataNotFoundError as error:  # e.g. no conversion in the validation days
            report["converged"] = {"skipped": str(error)}
    return report


def run_converged(split: RetrievalSplit, config: AblationConfig) -> dict[str, Any]:
    """The converged table: {"variants": {name: {metric: {mean, std}}}, "best_step",
    "steps", "validation": {name: [[(step, recall), ...] per seed]}, "config"}."""
    per_variant: dict[str, dict[str, list[float]]] = {}
    best: dict[str, list[int | None]] = {}
    steps: dict[str, list[int]] = {}
    checks: dict[str, list[list[list[float]]]] = {}
    converged = config.converged or ConvergedConfig()
    with tempfile.TemporaryDirectory(prefix="retrieval-converged-") as work:
        for variant in config.variants:
            runs: dict[str, list[float]] = {}
            for seed in range(config.seeds):
                result = train_converged(split, config, variant, seed, Path(work))
                best.setdefault(variant, []).append(result.best_step)
                steps.setdefault(variant, []).append(result.steps)
                checks.setdefault(variant, []).append([list(check) for check in result.checks])
                model = result.model
                if converged.refit and result.best_step:
                    budget = config.model_copy(update={"steps": result.best_step})
                    model = train_variant(split, budget, variant, seed, Path(work))[0].model
                for name, value in score_model(model, split, config).items():
                    runs.setdefault(name, []).append(value)
            per_variant[variant] = runs
    return {
        "variants": {
            name: {metric: _mean_std(values) for metric, values in runs.items()}
            for name, runs in per_variant.items()
        },
        "best_step": best,
        "steps": steps,
        "validation": checks,
        "config": converged.model_dump(mode="json"),
    }


def _report_config(
    split: RetrievalSplit,
    config: AblationConfig,
    epochs: dict[str, int],
    steps: dict[str, list[int]],
) -> dict[str, Any]:
    return {
        "ablation": config.model_dump(mode="json"),
        "cutoff": split.cutoff.isoformat()
        if isinstance(split.cutoff, datetime)
        else str(split.cutoff),
        "train_rows": split.train.num_rows,
        "heldout_conversions": split.conversions.num_rows,
        "heldout_long_clicks": split.long_clicks.num_rows,
        "long_click_threshold_s": split.long_click_threshold_s,
        "n_pins": len(split.corpus),
        "epochs_per_variant": epochs,
        "steps_per_variant": steps,
        "index_variant": INDEX_VARIANT,
        "baselines": list(config.baselines.names),
        "trainer": "plain torch loop (train_on_parquet), same train_step as the Ray Train loop",
        "seeds": list(range(config.seeds)),
    }
