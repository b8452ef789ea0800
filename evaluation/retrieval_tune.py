"""`pinfeed optimize retrieval`: tune the retrieval model with Ray Tune, on the same Ray.

What is searched (`search_space`): learning rate, softmax temperature, tower width and output
width, the dwell weighting's `alpha` and `t_max_s` (the dual-positive seed: they "need periodic
re-tuning"), and the aux weight for the `_aux` variants. Random search (seeded) with ASHA
early stopping: every trial trains with the plain loop on the train part minus its last
`validation_days` and reports Recall@K of that day's conversions and long clicks every
`every` steps; ASHA stops the weak trials at its rungs and each trial also stops on its own
after `patience` reports without improvement. The test days are never looked at. The
validation recall pools the day's conversions and long clicks; long clicks are the larger
share, so the search leans towards long-click recall.

Writes:
- `<out>` (JSON): every trial (params, best validation recall, steps, best step), the best
  one, and the best config's held-out recall after refitting on all train rows for its best
  step count, beside the default config refitted the same way (same seeds);
- `<out>` with `.yaml`: the best config as a retrieval job config (`pinfeed train retrieval
  --config`), its epochs the best step count over the batches of the whole training set (the
  held-out days included: the job trains on all of it);
- `<out>` with `.png`: every trial's validation recall against its steps (where ASHA or
  patience stopped it), the best one marked.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from pydantic import Field

from evaluation.retrieval import (
    AblationConfig,
    ConvergedConfig,
    score_model,
    train_converged,
    train_variant,
)
from evaluation.retrieval_data import RetrievalSplit, time_split
from evaluation.tune import SearchSettings, run_search, trials_chart
from pinfeed.errors import UnavailableError
from pinfeed.home import ProjectHome
from training.retrieval.config import AUX_VARIANTS, Variant
from training.retrieval.dataset import read_training_set, sized_towers, weighted_rows
from training.retrieval.job_config import RetrievalJobConfig, RetrievalSettings
from training.training_sets import RETRIEVAL_NAME


class TuneSettings(SearchSettings):
    """The search's budget (defaults: the small preset's report) and what it tunes."""

    variant: Variant = "dual_positive"
    refit_seeds: int = Field(2, ge=1, description="Seeds of the held-out comparison.")
    converged: ConvergedConfig = ConvergedConfig()


def search_space(variant: Variant) -> dict[str, Any]:
    """Ray Tune's distributions over the settings `apply_params` knows."""
    from ray import tune

    space = {
        "learning_rate": tune.loguniform(1e-4, 1e-2),
        "temperature": tune.loguniform(0.02, 0.2),
        "hidden": tune.choice([64, 128, 256]),
        "output_dim": tune.choice([32, 64, 128]),
        "alpha": tune.uniform(0.1, 1.0),
        "t_max_s": tune.loguniform(10.0, 300.0),
    }
    if variant in AUX_VARIANTS:
        space["aux_weight"] = tune.loguniform(0.01, 1.0)
    return space


def apply_params(settings: RetrievalSettings, params: dict[str, Any]) -> RetrievalSettings:
    """`settings` with one trial's parameters put in their places."""
    towers = settings.towers.model_copy(
        update={
            "hidden_dims": (int(params["hidden"]),),
            "output_dim": int(params["output_dim"]),
        }
    )
    weights = settings.weights.model_copy(
        update={"alpha": float(params["alpha"]), "t_max_s": float(params["t_max_s"])}
    )
    top = {
        k: float(params[k]) for k in ("learning_rate", "temperature", "aux_weight") if k in params
    }
    return settings.model_copy(update={"towers": towers, "weights": weights, **top})


def _trial_config(base: AblationConfig, settings: TuneSettings, params: dict) -> AblationConfig:
    """The ablation config one trial trains with (no params: the default model)."""
    converged = settings.converged.model_copy(update={"max_steps": settings.max_steps})
    model = apply_params(base.model, params) if params else base.model
    return base.model_copy(update={"model": model, "converged": converged})


def _trial(params: dict[str, Any], split: RetrievalSplit, base: AblationConfig,
           settings: TuneSettings) -> None:  # fmt: skip
    """One Ray Tune trial: train with early stopping, reporting every check to Tune."""
    from ray import tune

    config = _trial_config(base, settings, params)

    def report(step: int, recall: float) -> None:
        tune.report({"recall": recall, "step": step})

    with tempfile.TemporaryDirectory(prefix="retrieval-tune-") as work:
        train_converged(split, config, settings.variant, settings.seed, Path(work), report)


def _search(
    split: RetrievalSplit, base: AblationConfig, settings: TuneSettings, storage: Path
) -> list[dict[str, Any]]:
    """Every trial's params and results, best first (`evaluation.tune.run_search`)."""
    from ray import tune

    trainable = tune.with_parameters(_trial, split=split, base=base, settings=settings)
    space = search_space(settings.variant)
    return run_search(
        trainable, space, settings, metric="recall", storage=storage, name="retrieval-tune"
    )


def _held_out(
    split: RetrievalSplit, config: AblationConfig, variant: Variant, steps: int, seeds: int
) -> dict[str, float]:
    """Mean held-out recall of `config` refitted on all train rows for `steps` steps."""
    scores: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="retrieval-tune-refit-") as work:
        for seed in range(seeds):
            budget = config.model_copy(update={"steps": steps})
            model = train_variant(split, budget, variant, seed, Path(work))[0].model
            for name, value in score_model(model, split, config).items():
                scores.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def _default_run(
    split: RetrievalSplit, base: AblationConfig, settings: TuneSettings
) -> tuple[int, float]:
    """The default config trained like a trial (seed `settings.seed`): its early-stopped
    step count and best validation recall, to compare with the trials'."""
    config = _trial_config(base, settings, {})
    with tempfile.TemporaryDirectory(prefix="retrieval-tune-default-") as work:
        result = train_converged(split, config, settings.variant, settings.seed, Path(work))
    return int(result.best_step or config.steps), max(score for _, score in result.checks)


def job_config(
    split: RetrievalSplit, training_set: pa.Table, model: RetrievalSettings, steps: int
) -> RetrievalJobConfig:
    """The tuned settings as a job config: epochs = best steps over the batches of the whole
    training set (what the job trains on), the variant's weighted rows."""
    towers = sized_towers(split.corpus, split.user_ids, **model.towers.model_dump())
    rows = weighted_rows(training_set, model.sized(towers)).num_rows
    epochs = max(1, math.ceil(steps / max(1, math.ceil(rows / model.batch_size))))
    return RetrievalJobConfig(model=model.model_copy(update={"epochs": epochs}))


def tune_retrieval(
    home: ProjectHome,
    out: Path,
    settings: TuneSettings | None = None,
    base: AblationConfig | None = None,
) -> dict[str, Any]:
    """Search, compare the best config with the default on the held-out days, write both
    files (module docstring); return the report."""
    settings = settings or TuneSettings()
    base = base or AblationConfig()
    split = time_split(home, home.events, base.holdout_days)
    out.parent.mkdir(parents=True, exist_ok=True)
    trials = _search(split, base, settings, out.parent / "tune")
    best = next((t for t in trials if "best_recall" in t), None)
    if best is None:
        raise UnavailableError(
            f"every trial failed; the first: {trials[0].get('error')}. Each trial's log is "
            f"under {out.parent / 'tune'}"
        )
    tuned = _trial_config(base, settings, best["params"])
    tuned = tuned.model_copy(
        update={"model": tuned.model.model_copy(
            update={"variant": settings.variant, "seed": settings.seed}
        )}
    )  # fmt: skip
    default_steps, default_recall = _default_run(split, base, settings)
    seeds = settings.refit_seeds
    report = {
        "variant": settings.variant,
        "trials": trials,
        "best": best,
        "default": {"best_recall": default_recall, "best_step": default_steps},
        "held_out": {
            "tuned": _held_out(split, tuned, settings.variant, best["best_step"], seeds),
            "default": _held_out(split, base, settings.variant, default_steps, seeds),
            "tuned_steps": best["best_step"],
            "default_steps": default_steps,
            "seeds": list(range(seeds)),
        },
        "settings": settings.model_dump(mode="json"),
        "cutoff": split.cutoff.isoformat(),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    trials_chart(trials, out.with_suffix(".png"), "validation Recall@100")
    training_set = read_training_set(home.training_sets / f"{RETRIEVAL_NAME}.parquet")
    config = job_config(split, training_set, tuned.model, best["best_step"])
    out.with_suffix(".yaml").write_text(
        "# Written by `pinfeed optimize retrieval` (evaluation/retrieval_tune.py): the best "
        "trial's settings.\n" + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    return report
