"""Ray Tune on the ranker (`pinfeed optimize ranking`), on a tiny world and the session's Ray:
every trial reports to Tune and stays inside its budget and the search space, an early-stopped
fit keeps its best weights and is calibrated for the rate it trained at, the held-out table
holds the tuned, default and LightGBM arms on the same test rows, and the written job config
is a valid ranking job config holding the best trial's shape and learning rate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation import ranking_tune
from evaluation.ranking import RankingEvalConfig
from evaluation.ranking_gbdt import GbdtConfig
from evaluation.ranking_tune import (
    RankerTrial,
    RankingTuneSettings,
    TuneRows,
    fit_ranker,
    load_rows,
    mean_pr_auc,
    trial_config,
    tune_ranking,
)
from pinfeed.calibration import fit_effective_sample_rates
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from tests.support.homes import build_ranking_home
from training.ranking.config import (
    RankerOptions,
    RankingJobConfig,
    SplitConfig,
    load_job_config,
)

pytestmark = pytest.mark.slow  # a tiny world, 3 trials, 2 refits and LightGBM: ~1 min

SETTINGS = RankingTuneSettings(
    trials=3,
    seed=2,
    max_steps=60,
    grace_steps=20,
    every=10,
    patience=3,
    refit_seeds=1,
    job=RankingJobConfig(
        batch_size=256, weight_decay=1e-5, split=SplitConfig(validation_days=1, test_days=2)
    ),
)
EVAL = RankingEvalConfig(gbdt=GbdtConfig(n_estimators=60, early_stopping_rounds=10))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_ranking_home(tmp_path_factory.mktemp("ranking-tune") / "home")


@pytest.fixture(scope="module")
def rows(home: ProjectHome) -> TuneRows:
    return load_rows(home, SETTINGS, EVAL)[0]


def test_fit_keeps_its_best_weights_and_calibrates_for_its_own_rate(rows: TuneRows) -> None:
    trial = RankerTrial(model=RankerOptions(hidden_dims=(32,), head_dim=8), learning_rate=3e-3,
                        keep_rate=0.5)  # fmt: skip
    fit = fit_ranker(rows, trial, SETTINGS, seed=0)
    steps = [step for step, _ in fit.checks]
    assert steps == list(range(10, 10 * len(steps) + 1, 10)) and steps[-1] <= 60
    best_step, best_score = max(fit.checks, key=lambda check: check[1])
    assert fit.best_step == best_step
    assert mean_pr_auc(fit.model, rows.validation) == pytest.approx(best_score, abs=1e-12)
    assert fit.sample_rate == pytest.approx(rows.sample_rate * 0.5)
    # the rows it trained on hold fewer unengaged impressions, so every head's rate is lower
    # than the training set's own (rates are per head: w < w_t <= 1)
    full = fit_effective_sample_rates(rows.train.labels, rows.sample_rate)
    assert np.all(fit.calibration_rates < full) and np.all(fit.calibration_rates > fit.sample_rate)


def test_fit_restores_the_best_check_and_stops_after_patience(
    rows: TuneRows, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripted validation scores (best at the second check, then three worse ones): the fit
    stops at the fifth check and hands back the weights it had at the second."""
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.05, 0.9])
    states: list[dict[str, torch.Tensor]] = []

    def scripted(model: torch.nn.Module, _: object) -> float:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(ranking_tune, "mean_pr_auc", scripted)
    trial = RankerTrial(model=RankerOptions(hidden_dims=(16,), head_dim=0), learning_rate=1e-2)
    fit = fit_ranker(rows, trial, SETTINGS, seed=1)
    assert [step for step, _ in fit.checks] == [10, 20, 30, 40, 50] and fit.best_step == 20
    restored = fit.model.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in states[1].items())
    assert not all(torch.equal(restored[k], v) for k, v in states[-1].items())


def test_search_reports_every_trial_and_writes_the_best_as_a_job_config(
    ray_local: None, home: ProjectHome, rows: TuneRows
) -> None:
    out = home.reports / "ranking_tune.json"
    report = tune_ranking(home, out, SETTINGS, EVAL)

    trials = report["trials"]
    assert len(trials) == 3 and all("error" not in t for t in trials), trials
    for trial in trials:
        steps = [step for step, _ in trial["history"]]
        assert steps == list(range(10, 10 * len(steps) + 1, 10)) and steps[-1] <= 60, trial
        best = max(trial["history"], key=lambda check: check[1])
        assert (trial["best_step"], trial["best_pr_auc"]) == (best[0], best[1])
        params = trial["params"]
        assert 1e-4 <= params["learning_rate"] <= 1e-2 and 0.1 <= params["keep_rate"] <= 1.0
        assert params["width"] in (64, 128, 256, 512) and params["depth"] in (1, 2, 3)
    assert len({t["params"]["learning_rate"] for t in trials}) == 3  # three distinct draws
    assert report["best"]["best_pr_auc"] == max(t["best_pr_auc"] for t in trials)

    held = report["held_out"]
    for arm in ("tuned", "default", "lightgbm"):
        heads = held[arm]["heads"]
        assert list(heads) == list(ENGAGEMENTS)
        for m in heads.values():
            assert 0.0 < m["pr_auc"] <= 1.0 and 0.0 <= m["ece_cal"] < 1.0
        assert held[arm]["mean_pr_auc"] == pytest.approx(
            np.mean([m["pr_auc"] for m in heads.values()])
        )
    assert held["rows"] > report["rows"]["validation"] > 0  # two test days, one validation day

    tuned = trial_config(report["best"]["params"])
    job = load_job_config(out.with_suffix(".yaml"))
    assert job.model == tuned.model and job.learning_rate == tuned.learning_rate
    # the rest of the starting job config survives: split, batch size, weight decay
    assert job.model_dump(exclude={"model", "learning_rate", "epochs"}) == SETTINGS.job.model_copy(
        update={"seed": SETTINGS.seed}
    ).model_dump(exclude={"model", "learning_rate", "epochs"})
    # epochs: the best step over a rate-w*r set's batches, to the nearest epoch
    per_epoch = int(np.ceil(rows.train.expected_rows(tuned.keep_rate) / 256))
    assert job.epochs == max(1, round(report["best"]["best_step"] / per_epoch))
    rate = report["sample_rate"] * tuned.keep_rate
    assert f"--negative-sample-rate {rate:.4g}" in out.with_suffix(".yaml").read_text()
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_split_longer_than_the_event_set_is_refused_by_name(home: ProjectHome) -> None:
    job = RankingJobConfig(split=SplitConfig(validation_days=4, test_days=3))  # the world: 7 days
    with pytest.raises(ConfigError, match=r"training\.split: 7 validation and test days leave"):
        load_rows(home, SETTINGS.model_copy(update={"job": job}), EVAL)
