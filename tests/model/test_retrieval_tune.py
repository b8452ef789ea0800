"""Ray Tune on the retrieval model (`pinfeed optimize retrieval`), on the tiny world and the
session's Ray: every trial reports to Tune and stays inside its budget and the search space,
each trial's best check is its own, and the written job config is a valid retrieval job config
holding the best trial's settings, variant and seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.retrieval import AblationConfig, ConvergedConfig
from evaluation.retrieval_tune import TuneSettings, apply_params, tune_retrieval
from pinfeed.home import ProjectHome
from tests.support.homes import build_tiny_home
from training.retrieval.job_config import RetrievalSettings, load_job_config

pytestmark = pytest.mark.slow  # 3 trials + 2 refits on the tiny world: ~40 s on 2 cores

TINY_MODEL = RetrievalSettings(batch_size=128, towers={"hidden_dims": (32,)})


def test_search_reports_every_trial_and_writes_the_best_as_a_job_config(
    ray_local: None, tmp_path: Path
) -> None:
    home: ProjectHome = build_tiny_home(tmp_path / "home")
    settings = TuneSettings(
        trials=3,
        variant="dual_positive_aux",  # the aux weight joins the search
        seed=3,
        max_steps=60,
        grace_steps=20,
        refit_seeds=1,
        converged=ConvergedConfig(every=10, patience=3),
    )
    out = tmp_path / "reports" / "retrieval_tune.json"
    report = tune_retrieval(home, out, settings, AblationConfig(holdout_days=2, model=TINY_MODEL))

    trials = report["trials"]
    assert len(trials) == 3 and all("error" not in t for t in trials), trials
    for trial in trials:  # what Tune recorded of each trial: checks every 10 steps, <= max_t
        steps = [step for step, _ in trial["history"]]
        assert steps == list(range(10, 10 * len(steps) + 1, 10)) and steps[-1] <= 60, trial
        best = max(trial["history"], key=lambda check: check[1])
        assert (trial["best_step"], trial["best_recall"]) == (best[0], best[1])
        params = trial["params"]
        assert 1e-4 <= params["learning_rate"] <= 1e-2 and 0.02 <= params["temperature"] <= 0.2
        assert params["hidden"] in (64, 128, 256) and 0.1 <= params["alpha"] <= 1.0
        assert 0.01 <= params["aux_weight"] <= 1.0
    assert len({t["params"]["learning_rate"] for t in trials}) == 3  # three distinct draws
    held = report["held_out"]
    assert held["tuned_steps"] == report["best"]["best_step"]
    assert held["default_steps"] == report["default"]["best_step"] <= 60
    assert 0.0 <= report["default"]["best_recall"] <= 1.0
    for arm in ("tuned", "default"):
        assert 0.0 <= held[arm]["recall@100"] <= 1.0

    job = load_job_config(out.with_suffix(".yaml"))
    expected = apply_params(TINY_MODEL, report["best"]["params"]).model_copy(
        update={"variant": "dual_positive_aux", "seed": 3}
    )
    assert job.model.model_dump(exclude={"epochs"}) == expected.model_dump(exclude={"epochs"})
    assert job.model.aux_weight == report["best"]["params"]["aux_weight"]
    assert job.model.epochs >= 1
