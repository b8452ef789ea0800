"""Ray Tune plumbing shared by the model searches (`pinfeed optimize retrieval`, `pinfeed
optimize ranking`): a seeded random search with ASHA early stopping over optimizer steps, on
the Ray in RAY_ADDRESS or a local one, and the chart of every trial's validation curve.

A trainable reports `{metric: value, "step": step}` at each check (`tune.report`); ASHA stops
the weak trials at its rungs (its grace period is cut to `max_steps` where it is longer: ASHA
refuses a grace beyond its max_t). What comes back per trial (`run_search`): its params, its best
check (`best_<metric>`, `best_step`), the last step it reached and its whole history, or the
error it died of.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from pinfeed.config import FrozenModel
from training.ray_train import ensure_ray


class SearchSettings(FrozenModel):
    """The search's budget: trials, seed, ASHA's rungs, each trial's CPUs."""

    trials: int = Field(16, gt=0)
    seed: int = Field(0, description="Seeds the random search and every trial's model.")
    max_steps: int = Field(600, gt=0, description="ASHA's max_t, in optimizer steps.")
    grace_steps: int = Field(50, gt=0, description="ASHA's grace period, in optimizer steps.")
    reduction_factor: float = Field(3.0, gt=1)
    cpus_per_trial: float = Field(1.0, gt=0)


def run_search(
    trainable: Callable[[dict[str, Any]], None],
    param_space: dict[str, Any],
    settings: SearchSettings,
    *,
    metric: str,
    storage: Path,
    name: str,
) -> list[dict[str, Any]]:
    """Run the search (maximising `metric`); every trial's params and results, best first."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    ensure_ray()  # the cluster in RAY_ADDRESS, or a local one
    scheduler = ASHAScheduler(
        time_attr="step",
        max_t=settings.max_steps,
        grace_period=min(settings.grace_steps, settings.max_steps),  # ASHA asserts grace <= max_t
        reduction_factor=settings.reduction_factor,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": settings.cpus_per_trial}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=metric,
            mode="max",
            num_samples=settings.trials,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=settings.seed),
        ),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0),
    )
    best_key = f"best_{metric}"
    trials = []
    for result in tuner.fit():
        history = result.metrics_dataframe
        if history is not None:  # drop checks with nothing to score (NaN)
            history = history.dropna(subset=[metric]) if metric in history else history[:0]
        if result.error or history is None or history.empty:
            error = result.error or f"no finite {metric} reported"
            trials.append({"params": result.config, "error": str(error)})
            continue
        best = history.loc[history[metric].idxmax()]
        trials.append(
            {
                "params": result.config,
                best_key: float(best[metric]),
                "best_step": int(best["step"]),
                "steps": int(history["step"].max()),
                "history": [
                    [int(step), float(value)]
                    for step, value in zip(history["step"], history[metric], strict=True)
                ],
            }
        )
    return sorted(trials, key=lambda t: -t.get(best_key, -1.0))


def trials_chart(trials: list[dict[str, Any]], path: Path, ylabel: str) -> Path:
    """Each trial's validation `ylabel` against optimizer steps; the best (first) drawn bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for rank, trial in enumerate(t for t in trials if t.get("history")):
        steps, values = zip(*trial["history"], strict=True)
        best = rank == 0
        axes.plot(steps, values, lw=2.5 if best else 1.0, alpha=1.0 if best else 0.5,
                  color="C3" if best else "C0", label="best trial" if best else None)  # fmt: skip
    axes.set_xlabel("optimizer steps (a line ends where ASHA or patience stopped the trial)")
    axes.set_ylabel(ylabel)
    axes.set_title(f"Ray Tune: {len(trials)} trials, random search + ASHA")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
