"""The Ax adapter of the utility-weight search (the one file an Ax upgrade touches).

The weights sum to 1, which Ax's Client cannot express as `==`: the `derived` weight is an
Ax `DerivedParameterConfig` (1 - the others), and two inequalities on the free weights' sum
keep it in its range. The hand-picked weights are attached as the baseline arm (trial 0);
outcome constraints are absolute thresholds (see `evaluation.utility_space`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from evaluation.utility_space import (
    OBJECTIVE_HEAD,
    SearchResult,
    Trial,
    UtilitySearchConfig,
    ValidationSlice,
    evaluate,
)
from pinfeed.schema import ENGAGEMENTS


def _name(head: str) -> str:
    return f"w_{head}"


@contextmanager
def _ax_session() -> Iterator[None]:
    """For the duration of a search: one torch thread (BoTorch's many small ops oversubscribe
    a busy machine: a trial took 10x longer with the default thread count on 2 shared cores),
    Ax's INFO logs (handlers on the `ax` logger) and GP jitter warnings kept out of the output.
    Everything is restored afterwards."""
    import ax  # noqa: F401  (attaches its handlers to the `ax` logger)
    import torch

    handlers = list(logging.getLogger("ax").handlers)
    levels = [handler.level for handler in handlers]
    threads = torch.get_num_threads()
    for handler in handlers:
        handler.setLevel(logging.WARNING)
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_num_threads(threads)
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def _ax_client(config: UtilitySearchConfig, derived: str, limits: dict[str, float]) -> Any:
    from ax.api import Client, RangeParameterConfig
    from ax.api.configs import DerivedParameterConfig

    free = [head for head in ENGAGEMENTS if head != derived]
    lows, highs = config.ranges.bounds()
    low, high = getattr(config.ranges, derived)
    total = " + ".join(_name(head) for head in free)
    client = Client(random_seed=config.seed)
    client.configure_experiment(
        parameters=[
            *(
                RangeParameterConfig(
                    name=_name(head),
                    parameter_type="float",
                    bounds=(
                        float(lows[ENGAGEMENTS.index(head)]),
                        float(highs[ENGAGEMENTS.index(head)]),
                    ),
                )
                for head in free
            ),
            DerivedParameterConfig(
                name=_name(derived),
                expression_str=f"1.0 - {' - '.join(_name(head) for head in free)}",
                parameter_type="float",
            ),
        ],
        parameter_constraints=[f"{total} <= {1.0 - low!r}", f"{total} >= {1.0 - high!r}"],
        name=f"utility-weights-derived-{derived}",
    )
    client.configure_optimization(
        objective=f"{OBJECTIVE_HEAD}_pr_auc",
        outcome_constraints=[f"{head}_pr_auc >= {limit!r}" for head, limit in limits.items()],
    )
    client.set_generation_strategy(_generation_strategy(config))
    return client


def _generation_strategy(config: UtilitySearchConfig) -> Any:
    """Sobol for `initialization_trials` (the attached baseline arm not counted), then BoTorch
    (Ax's modular GP + qLogNEI with the outcome constraints). The weight-sum constraints make
    BoTorch optimise the acquisition with SLSQP; Ax's default 20 restarts x 1024 raw samples
    spend minutes per trial on 2 cores, while `config.acquisition` keeps a trial to seconds."""
    from ax.adapter.registry import Generators
    from ax.generation_strategy.generation_strategy import GenerationNode, GenerationStrategy
    from ax.generation_strategy.generator_spec import GeneratorSpec
    from ax.generation_strategy.transition_criterion import MinTrials

    sobol = GenerationNode(
        name="Sobol",
        generator_specs=[
            GeneratorSpec(generator_enum=Generators.SOBOL, generator_kwargs={"seed": config.seed})
        ],
        transition_criteria=[
            MinTrials(threshold=config.initialization_trials, transition_to="BoTorch")
        ],
        should_deduplicate=True,
    )
    botorch = GenerationNode(
        name="BoTorch",
        generator_specs=[
            GeneratorSpec(
                generator_enum=Generators.BOTORCH_MODULAR,
                generator_gen_kwargs={
                    "model_gen_options": {
                        "optimizer_kwargs": config.acquisition.model_dump(exclude={"maxiter"})
                        | {"options": {"maxiter": config.acquisition.maxiter}}
                    }
                },
            )
        ],
        should_deduplicate=True,
    )
    return GenerationStrategy(name="Sobol+BoTorch", nodes=[sobol, botorch])


def _weights(parameters: dict[str, Any]) -> NDArray[np.float64]:
    """Ax parameterisation -> [H] weights; the derived one can land a rounding error below 0."""
    return np.array([max(0.0, float(parameters[_name(h)])) for h in ENGAGEMENTS])


def _outcome(trial: Trial) -> dict[str, float]:
    return {f"{head}_pr_auc": value for head, value in trial.pr_auc.items()}


def ax_search(
    data: ValidationSlice,
    config: UtilitySearchConfig,
    limits: dict[str, float],
    derived: str | None = None,
) -> SearchResult:
    """`config.trials` trials: the hand-picked baseline arm, then Sobol, then GP-based BO."""
    derived = derived or config.derived
    hand = config.hand_picked.vector()
    with _ax_session():
        client = _ax_client(config, derived, limits)
        index = client.attach_baseline(
            {_name(head): float(w) for head, w in zip(ENGAGEMENTS, hand, strict=True)}
        )
        trials = [evaluate(data, 0, hand, limits)]
        client.complete_trial(index, _outcome(trials[0]))
        while len(trials) < config.trials:
            for index, parameters in client.get_next_trials(max_trials=1).items():
                trials.append(evaluate(data, len(trials), _weights(parameters), limits))
                client.complete_trial(index, _outcome(trials[-1]))
    return SearchResult(f"ax (derived {derived})", trials)
