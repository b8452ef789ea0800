"""`pinfeed optimize utility`: choose the utility weights by constrained Bayesian optimisation
(Ax), next to random search and the hand-picked weights at the same trial budget.

Problem (the seed's S1-S5), on a validation slice of calibrated per-head probabilities:

    maximise   f_long_click(w) = PR-AUC of long_click under the ranking u = sum_t w_t p_t
    subject to sum_t w_t = 1                               (S1)
               low_t <= w_t <= high_t                      (S2)
               f_t(w) >= c_t * f_t(w_hand)   t in {click, save, closeup}   (S3-S5)

PR-AUC is `average_precision_score` everywhere (objective, constraints, reports).

The Ax part lives in `evaluation.utility_ax` (the adapter). Ax's Client takes no `==`
parameter constraint, so one weight (`derived`) is 1 - (the others), an Ax derived parameter,
and two inequalities on the free weights' sum keep it inside its range. Sobol initialisation then samples the free weights uniformly, which is not
uniform for the derived one; `bias_check_derived` reruns the search with another weight
derived and reports both, so a derived-weight bias would show.

Outcome constraints are absolute: thresholds c_t * f_t(w_hand) are computed once on the slice
(no status-quo noise, no `DataRequiredError`). Both searches start from the hand-picked arm (the
status quo that defines the thresholds, Ax's baseline arm) and spend the remaining trials on
their own proposals, so each best is feasible and at least the hand-picked value; whether a
search improved on it is reported (`improved_over_hand_picked`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.ranking import RankingEvalConfig
from evaluation.utility_ax import ax_search
from evaluation.utility_space import (
    OBJECTIVE_HEAD,
    SearchResult,
    Trial,
    UtilitySearchConfig,
    ValidationSlice,
    random_search,
    thresholds,
)
from pinfeed.artifacts.runs import LATEST
from pinfeed.config import load_yaml_section
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import HeadWeights, UtilityWeights, save_utility_weights
from training.ranking.config import CONFIG_SECTIONS
from training.ranking.record import read_ranking_run

TRACE_FILE = "utility_trace.png"


def _arm(trial: Trial) -> dict[str, Any]:
    return {
        "weights": trial.weights,
        "long_click_pr_auc": trial.objective,
        "pr_auc": trial.pr_auc,
        "constraints_met": trial.feasible,
        "trial": trial.index,
    }


def _derived_check(result: SearchResult, config: UtilitySearchConfig) -> dict[str, Any]:
    """What a derived-weight bias would change: the Sobol phase's mean weights and the best."""
    sobol = result.trials[1 : 1 + config.initialization_trials]
    means = np.mean([[t.weights[h] for h in ENGAGEMENTS] for t in sobol], axis=0)
    return {
        "best_long_click_pr_auc": result.best().objective,
        "best_weights": result.best().weights,
        "sobol_mean_weights": dict(zip(ENGAGEMENTS, means.tolist(), strict=True)),
        "feasible_trials": sum(t.feasible for t in result.trials),
    }


def search_report(
    data: ValidationSlice, config: UtilitySearchConfig
) -> tuple[dict[str, Any], dict[str, SearchResult]]:
    """Run Ax (plus its derived-weight checks) and random search; the report dict
    ({"best", "hand_picked", "random_search", ...}) and every search's trials."""
    limits = thresholds(data, config)
    results = {config.derived: ax_search(data, config, limits)}
    for derived in config.bias_check_derived:
        if derived not in results:
            results[derived] = ax_search(data, config, limits, derived)
    ax, random = results[config.derived], random_search(data, config, limits)
    hand = ax.trials[0]
    report = {
        "best": {
            **_arm(ax.best()),
            "improved_over_hand_picked": ax.best().objective > hand.objective,
        },
        "hand_picked": _arm(hand),
        "random_search": {
            **_arm(random.best()),
            "improved_over_hand_picked": random.best().objective > hand.objective,
        },
        "objective": f"{OBJECTIVE_HEAD} PR-AUC (average precision) of the utility ranking",
        "thresholds": limits,
        "constraint_factors": config.constraint_factors.model_dump(),
        "ranges": config.ranges.model_dump(),
        "trials": config.trials,
        "initialization_trials": config.initialization_trials,
        "seed": config.seed,
        "derived": config.derived,
        "derived_weight_check": {
            derived: _derived_check(result, config) for derived, result in results.items()
        },
        "random_search_check": _derived_check(random, config),
        "traces": {
            **{result.method: result.trace() for result in results.values()},
            random.method: random.trace(),
        },
        "validation_rows": int(data.labels.shape[0]),
    }
    return report, {**{r.method: r for r in results.values()}, random.method: random}


def save_trace_figure(path: Path, results: dict[str, SearchResult]) -> Path:
    """Best feasible objective vs trial per method, every trial's objective as a dot (hollow:
    infeasible), the hand-picked value as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, result in results.items():
        x = np.arange(1, len(result.trials) + 1)
        (line,) = axes.plot(x, result.trace(), drawstyle="steps-post", label=f"{method}: best")
        values = np.array([t.objective for t in result.trials])
        feasible = np.array([t.feasible for t in result.trials])
        axes.scatter(x[feasible], values[feasible], s=12, color=line.get_color())
        axes.scatter(
            x[~feasible], values[~feasible], s=12, facecolors="none", edgecolors=line.get_color()
        )
    hand = next(iter(results.values())).trials[0].objective
    axes.axhline(hand, linestyle=":", color="grey", label="hand-picked")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{OBJECTIVE_HEAD} PR-AUC (validation)")
    axes.set_title("Utility weight search (dots: trials, hollow: constraint violated)")
    axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def load_search_config(path: Path) -> UtilitySearchConfig:
    """The `utility:` section of a ranking YAML (configs/ranking.yaml)."""
    return load_yaml_section(path, "utility", UtilitySearchConfig, CONFIG_SECTIONS)


def optimize_utility(
    home: ProjectHome,
    out: Path,
    *,
    trials: int | None = None,
    seed: int | None = None,
    run_id: str = LATEST,
    config: UtilitySearchConfig | None = None,
    scoring: RankingEvalConfig | None = None,
) -> dict[str, Any]:
    """Search the utility weights on a run's validation days (default: the newest run with a
    ranker); write the report to `out`, the trace figure beside it and the best weights to the
    run's utility.json. `trials` / `seed` override the config's; `scoring` is how the
    validation days are read (configs/ranking.yaml's `evaluation:` section)."""
    from evaluation.ranking import ranking_run, score_slice

    config = config or UtilitySearchConfig()
    overrides = {"trials": trials, "seed": seed}
    config = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    config = UtilitySearchConfig.model_validate(config.model_dump())
    layout = ranking_run(home, run_id)
    run = read_ranking_run(layout.ranking)
    scores = score_slice(home, layout, "validation", scoring or RankingEvalConfig())
    report, results = search_report(ValidationSlice(scores.labels, scores.calibrated()), config)
    report["figure"] = str(save_trace_figure(out.parent / TRACE_FILE, results))
    chosen = UtilityWeights(
        version=f"ax-{run.run_id}-seed{config.seed}",
        weights=HeadWeights(**report["best"]["weights"]),
        source=f"ax: best feasible of {config.trials} trials on the validation days",
    )
    report["utility_json"] = str(save_utility_weights(chosen, layout.utility))
    report["run_id"] = run.run_id
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
