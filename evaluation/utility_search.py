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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.metrics import average_precision_score

from pinfeed.errors import ConfigError, SchemaError
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import (
    HeadWeights,
    UtilityWeights,
    default_utility_weights,
    save_utility_weights,
)

Head = Literal["closeup", "save", "click", "long_click"]
OBJECTIVE_HEAD = "long_click"
CONSTRAINED_HEADS = ("closeup", "save", "click")
TRACE_FILE = "utility_trace.png"
_TOLERANCE = 1e-12


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightRanges(_Frozen):
    """S2: [low, high] per head; the sum-to-1 simplex must meet the box."""

    closeup: tuple[float, float] = (0.0, 0.5)
    save: tuple[float, float] = (0.0, 0.5)
    click: tuple[float, float] = (0.0, 0.6)
    long_click: tuple[float, float] = (0.1, 0.9)

    @model_validator(mode="after")
    def _reachable(self) -> WeightRanges:
        for head in ENGAGEMENTS:
            low, high = getattr(self, head)
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"{head}: need 0 <= low <= high <= 1, got ({low}, {high})")
        lows, highs = self.bounds()
        if not lows.sum() <= 1.0 <= highs.sum():
            raise ValueError("ranges: no weights in them sum to 1 (sum of lows > 1 or highs < 1)")
        return self

    def bounds(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """([H] lows, [H] highs) in ENGAGEMENTS order."""
        pairs = np.array([getattr(self, head) for head in ENGAGEMENTS], dtype=np.float64)
        return pairs[:, 0], pairs[:, 1]


class ConstraintFactors(_Frozen):
    """c_t of S3-S5: how much of the hand-picked weights' PR-AUC a head must keep."""

    closeup: float = Field(1.0, ge=0.0)
    save: float = Field(0.9, ge=0.0)
    click: float = Field(1.0, ge=0.0)


class AcquisitionOptions(_Frozen):
    """How hard BoTorch optimises the acquisition function per trial."""

    num_restarts: int = Field(4, ge=1)
    raw_samples: int = Field(256, ge=1)
    maxiter: int = Field(60, ge=1, description="SLSQP iterations per restart.")


class UtilitySearchConfig(_Frozen):
    """The `utility:` section of configs/ranking.yaml."""

    trials: int = Field(30, ge=2, description="Budget per method, the hand-picked arm included.")
    initialization_trials: int = Field(8, ge=1, description="Sobol trials before the GP.")
    seed: int = 0
    ranges: WeightRanges = WeightRanges()
    constraint_factors: ConstraintFactors = ConstraintFactors()
    derived: Head = Field("long_click", description="The weight set to 1 - the others.")
    bias_check_derived: tuple[Head, ...] = Field(
        ("closeup",), description="Rerun Ax with each of these derived instead (bias check)."
    )
    hand_picked: HeadWeights = default_utility_weights().weights
    acquisition: AcquisitionOptions = AcquisitionOptions()

    @model_validator(mode="after")
    def _hand_picked_is_admissible(self) -> UtilitySearchConfig:
        vector = self.hand_picked.vector()
        lows, highs = self.ranges.bounds()
        if abs(vector.sum() - 1.0) > 1e-9 or np.any(vector < lows) or np.any(vector > highs):
            raise ValueError("hand_picked: must sum to 1 and lie inside ranges")
        return self


@dataclass(frozen=True)
class ValidationSlice:
    """labels [N, H] in {0, 1} and calibrated probabilities p [N, H], ENGAGEMENTS order."""

    labels: NDArray[np.float32]
    p_calibrated: NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.labels.shape != self.p_calibrated.shape or self.labels.shape[1:] != (4,):
            raise SchemaError(
                f"labels {self.labels.shape} and p_calibrated {self.p_calibrated.shape} "
                "must both be [N, 4]"
            )

    def pr_aucs(self, weights: NDArray[np.float64]) -> dict[str, float]:
        """PR-AUC of every head under the ranking u = p @ weights."""
        score = self.p_calibrated @ weights
        return {
            head: float(average_precision_score(self.labels[:, t], score))
            for t, head in enumerate(ENGAGEMENTS)
        }


@dataclass(frozen=True)
class Trial:
    index: int
    weights: dict[str, float]
    pr_auc: dict[str, float]
    feasible: bool

    @property
    def objective(self) -> float:
        return self.pr_auc[OBJECTIVE_HEAD]


@dataclass(frozen=True)
class SearchResult:
    method: str
    trials: list[Trial]

    def best(self) -> Trial:
        """The feasible trial with the highest objective (trial 0, the hand-picked arm, is
        feasible by construction)."""
        feasible = [t for t in self.trials if t.feasible]
        return max(feasible, key=lambda t: (t.objective, -t.index))

    def trace(self) -> list[float]:
        """Best feasible objective after each trial (NaN until one is feasible)."""
        best, out = float("nan"), []
        for trial in self.trials:
            if trial.feasible and not trial.objective <= best:
                best = trial.objective
            out.append(best)
        return out


def thresholds(data: ValidationSlice, config: UtilitySearchConfig) -> dict[str, float]:
    """Absolute constraint thresholds c_t * f_t(hand-picked weights)."""
    hand = data.pr_aucs(config.hand_picked.vector())
    return {
        head: getattr(config.constraint_factors, head) * hand[head] for head in CONSTRAINED_HEADS
    }


def evaluate(
    data: ValidationSlice, index: int, weights: NDArray[np.float64], limits: dict[str, float]
) -> Trial:
    """One arm: its per-head PR-AUCs and whether it meets every constraint."""
    pr_auc = data.pr_aucs(weights)
    feasible = all(pr_auc[head] >= limit - _TOLERANCE for head, limit in limits.items())
    return Trial(index, dict(zip(ENGAGEMENTS, weights.tolist(), strict=True)), pr_auc, feasible)


def sample_weights(
    config: UtilitySearchConfig, rng: np.random.Generator, derived: str | None = None
) -> NDArray[np.float64]:
    """One point of the search space as the Sobol phase sees it: free weights uniform in their
    ranges, the derived one 1 - their sum, redrawn until it lies in its range."""
    derived = derived or config.derived
    position = ENGAGEMENTS.index(derived)
    lows, highs = config.ranges.bounds()
    for _ in range(10_000):
        weights = rng.uniform(lows, highs)
        weights[position] = 1.0 - (weights.sum() - weights[position])
        if lows[position] <= weights[position] <= highs[position]:
            return weights
    raise ConfigError(
        f"utility.ranges: fewer than 1 in 10,000 draws reach a valid {derived} weight; "
        "widen the ranges"
    )


def random_search(
    data: ValidationSlice, config: UtilitySearchConfig, limits: dict[str, float]
) -> SearchResult:
    """Same budget and space as `ax_search`: the hand-picked arm, then uniform draws."""
    rng = np.random.default_rng(config.seed)
    trials = [evaluate(data, 0, config.hand_picked.vector(), limits)]
    while len(trials) < config.trials:
        trials.append(evaluate(data, len(trials), sample_weights(config, rng), limits))
    return SearchResult("random search", trials)


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
    from evaluation.utility_ax import ax_search

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
    from training.ranking.job import load_config_section

    return load_config_section(path, "utility", UtilitySearchConfig)


def optimize_utility(
    home: ProjectHome,
    out: Path,
    *,
    trials: int | None = None,
    seed: int | None = None,
    run_dir: Path | None = None,
    config: UtilitySearchConfig | None = None,
) -> dict[str, Any]:
    """Search the utility weights on a run's validation days (default: the latest run); write
    the report to `out`, the trace figure beside it and the best weights to the run's
    utility.json. `trials` / `seed` override the config's."""
    from evaluation.ranking import RankingEvalConfig, score_slice
    from training.ranking.job import UTILITY_FILE, latest_ranking_run, read_ranking_run

    config = config or UtilitySearchConfig()
    overrides = {"trials": trials, "seed": seed}
    config = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    config = UtilitySearchConfig.model_validate(config.model_dump())
    run_dir = run_dir or latest_ranking_run(home)
    run = read_ranking_run(run_dir)
    scores = score_slice(home, run_dir, "validation", RankingEvalConfig())
    report, results = search_report(ValidationSlice(scores.labels, scores.calibrated()), config)
    report["figure"] = str(save_trace_figure(out.parent / TRACE_FILE, results))
    chosen = UtilityWeights(
        version=f"ax-{run.run_id}-seed{config.seed}",
        weights=HeadWeights(**report["best"]["weights"]),
        source=f"ax: best feasible of {config.trials} trials on the validation days",
    )
    report["utility_json"] = str(save_utility_weights(chosen, run_dir / UTILITY_FILE))
    report["run_id"] = run.run_id
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report
