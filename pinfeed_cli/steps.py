"""Every step of `pinfeed run`, as the function its own command calls: a command and the run
cannot drift apart. Each takes the project home and the step's options and returns a one-line
summary (the command prints more). Heavy imports (Feast, torch, Ray) happen inside, so
`pinfeed --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from pinfeed.artifacts.layout import LATEST
from pinfeed.errors import ConfigError, UnavailableError
from pinfeed.home import ProjectHome

if TYPE_CHECKING:
    from feature_repo.freshness import ViewFreshness
    from feature_repo.store import LoadWindow
    from training.job import Job

SNAPSHOT_GRACE = timedelta(days=1)
"""Daily snapshots are stamped at the end of each day: load through the day after the data,
but never past now (the snapshot of a day still running is stamped at its end, in the future:
serving it would use values a point-in-time join at request time cannot see, which the skew
report flags)."""


def generate(
    home: ProjectHome,
    *,
    preset: str = "small",
    seed: int = 0,
    out: Path | None = None,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
) -> str:
    from pinfeed.synthetic import GeneratorConfig, generate_and_write

    target = out or home.events
    summary = generate_and_write(
        GeneratorConfig.preset(preset, seed=seed, **(overrides or {})), target
    )
    if console is not None:
        console.print(summary)
    return f"{preset} preset, seed {seed}: {target}"


def validate_events(home: ProjectHome, events: Path | None = None) -> Any:
    """The validation report of an event set (the caller decides what a bad row means)."""
    from pinfeed.events import read_event_set
    from pinfeed.validate import validate

    return validate(read_event_set(events or home.events))


def validate_or_raise(home: ProjectHome) -> str:
    report = validate_events(home)
    report.raise_if_bad()
    return ", ".join(f"{t.table} {t.rows:,}" for t in report.tables.values()) + " rows, all valid"


def build_features(home: ProjectHome, events: Path | None = None) -> Any:
    from feature_repo.pipeline import build_features as build
    from pinfeed.events import read_event_set

    return build(read_event_set(events or home.events), home.features)


def apply(home: ProjectHome) -> str:
    from feature_repo.store import apply_definitions, open_store

    store = open_store(home)
    apply_definitions(store)
    return f"registry {home.feast / 'registry.db'}, online store {store.config.online_store.type}"


def default_materialize_end(home: ProjectHome) -> datetime:
    """The end of the event data plus a day, at most now (see `SNAPSHOT_GRACE`)."""
    from pinfeed.events import read_event_meta

    return min(read_event_meta(home.events).end.astimezone(UTC) + SNAPSHOT_GRACE, datetime.now(UTC))


def load_online(
    home: ProjectHome,
    end: datetime | None = None,
    since: datetime | None = None,
    *,
    full: bool = False,
) -> list[LoadWindow]:
    """Incremental up to `end` against what the online store holds; with `since`, every view
    reloaded over [since, end] (after an ingest rewrote feature rows already loaded); with
    `full`, every view reloaded whole. Naive times are UTC."""
    from feature_repo.store import materialize as load
    from feature_repo.store import open_store

    if full and since is not None:
        raise ConfigError("--full and --since: pick one (--full reloads everything)")
    stamp = _as_utc(end) if end else default_materialize_end(home)
    with _store_errors("online store load"):
        return load(open_store(home), end=stamp, start=_as_utc(since) if since else None, full=full)


def materialize(
    home: ProjectHome,
    end: datetime | None = None,
    since: datetime | None = None,
    *,
    full: bool = False,
) -> str:
    """`load_online`, summarised in one line."""
    windows = load_online(home, end, since, full=full)
    loaded = [w.view for w in windows if w.start is not None]
    stamp = windows[0].end.isoformat() if windows else "-"
    current = len(windows) - len(loaded)
    return f"online store: {len(loaded)} view(s) loaded up to {stamp}, {current} already up to date"


def feature_status(
    home: ProjectHome, as_of: datetime | None = None, sample: int = 64
) -> tuple[list[ViewFreshness], frozenset[str]]:
    """Each online view's freshness at `as_of` (default: the end of the event data, the clock
    of the data set; naive: UTC) and the views the serving feature service reads."""
    from feature_repo.freshness import check_views
    from feature_repo.store import open_store, service_views
    from serving.stages.online import SERVING_SERVICE

    store = open_store(home)
    clock = _as_utc(as_of) if as_of else _data_end(home)
    with _store_errors("online store check"):
        views = check_views(store, clock, sample=sample)
    return views, frozenset(service_views(store, SERVING_SERVICE))


@contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """A store that is down or unreadable: one clear line (exit 2), not a traceback."""
    from pinfeed.traffic.served import TRAFFIC_STORE_ERRORS

    try:
        yield
    except TRAFFIC_STORE_ERRORS as error:
        raise UnavailableError(f"{what} failed: {error}") from error


def _as_utc(moment: datetime) -> datetime:
    """Command-line times without a zone are UTC, like the data's."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _data_end(home: ProjectHome) -> datetime:
    from pinfeed.events import read_event_meta

    return min(read_event_meta(home.events).end.astimezone(UTC), datetime.now(UTC))


def training_sets(home: ProjectHome, seed: int = 0, negative_sample_rate: float = 0.1) -> str:
    import pyarrow.parquet as pq

    from feature_repo.store import open_store
    from pinfeed.events import read_event_set
    from training.training_sets import TrainingSetConfig, build_ranking_set, build_retrieval_set

    events = read_event_set(home.events)
    store = open_store(home)
    config = TrainingSetConfig(seed=seed, negative_sample_rate=negative_sample_rate)
    retrieval = build_retrieval_set(store, events, home.training_sets, config)
    ranking = build_ranking_set(store, events, home.training_sets, config)
    rows = [pq.ParquetFile(path).metadata.num_rows for path in (retrieval, ranking)]
    return f"{rows[0]:,} retrieval and {rows[1]:,} ranking examples in {home.training_sets}"


def train(
    home: ProjectHome,
    job: Job,
    *,
    config: Path | None = None,
    run_id: str | None = None,
    epochs: int | None = None,
) -> str:
    from training.job import train as run_job

    out = run_job(job, home, config=config, run_id=run_id, epochs=epochs)
    return f"{job} model in {out}"


def evaluate_ranking(
    home: ProjectHome, *, out: Path | None = None, config: Path | None = None, run_id: str = LATEST
) -> dict[str, Any]:
    from evaluation.ranking import evaluate_ranking as evaluate
    from evaluation.ranking import load_eval_config
    from training.job import config_file

    path = config_file("ranking", config)
    settings = load_eval_config(path) if path else None
    target = out or home.reports / "ranking.json"
    report = evaluate(home, target, run_id=run_id, config=settings)
    return report | {"path": str(target)}


def optimize_utility(
    home: ProjectHome,
    *,
    out: Path | None = None,
    config: Path | None = None,
    trials: int | None = None,
    initialization_trials: int | None = None,
    bias_check: bool = True,
    seed: int | None = None,
    run_id: str = LATEST,
) -> dict[str, Any]:
    from evaluation.ranking import RankingEvalConfig, load_eval_config
    from evaluation.utility_search import UtilitySearchConfig, load_search_config
    from evaluation.utility_search import optimize_utility as optimize
    from training.job import config_file

    path = config_file("ranking", config)
    search = load_search_config(path) if path else UtilitySearchConfig()
    scoring = load_eval_config(path) if path else RankingEvalConfig()
    update: dict[str, Any] = {} if bias_check else {"bias_check_derived": ()}
    if initialization_trials is not None:
        update["initialization_trials"] = initialization_trials
    search = UtilitySearchConfig.model_validate(search.model_dump() | update)
    target = out or home.reports / "utility.json"
    report = optimize(
        home, target, trials=trials, seed=seed, run_id=run_id, config=search, scoring=scoring
    )
    return report | {"path": str(target)}


def ingest_served(
    home: ProjectHome,
    *,
    state_dir: Path | None = None,
    redis_url: str | None = None,
    window_s: float = 86_400.0,
    replace: bool = False,
) -> Any:
    """The served log and the feedback log of the serving state at `state_dir` (default
    data/serving), or of Redis, into the event set (`pinfeed.traffic.ingest`). Feedback is
    read first, so an item served while both are read cannot leave its feedback unmatched."""
    from feature_repo.store import open_store
    from pinfeed.connection import redis_url_from_env
    from pinfeed.traffic.feedback_log import open_feedback_log
    from pinfeed.traffic.ingest import ingest_served as ingest
    from pinfeed.traffic.served import open_served_log
    from serving.stages.feedback import FEEDBACK_LOG

    redis_url = redis_url_from_env(redis_url)
    state = state_dir or home.data / "serving"
    project = open_store(home, redis_url=redis_url).project
    feedback = open_feedback_log(state / FEEDBACK_LOG, redis_url, project).read_all()
    served = open_served_log(state, redis_url, project, ttl_s=2 * window_s).read_all()
    return ingest(
        home.events, served, feedback, window=timedelta(seconds=window_s), replace=replace
    )


def rewards(
    home: ProjectHome, *, since: datetime | None = None, as_of: datetime | None = None
) -> str:
    from feature_repo.rewards_job import run_rewards_job
    from feature_repo.store import open_store

    result = run_rewards_job(
        home,
        since=_as_utc(since) if since else None,
        as_of=_as_utc(as_of) if as_of else None,
        store=open_store(home),
    )
    return (
        f"rewards for {result.clusters:,} clusters ({result.clusters_with_data:,} with data, mean"
        f" {result.mean_reward:.3f}) as of {result.as_of.isoformat()}: {result.path}"
    )


def evaluate_query_reward(
    home: ProjectHome, *, rounds: int = 60, seeds: int = 3, out: Path | None = None
) -> Any:
    from evaluation.query_reward import evaluate_query_reward as evaluate

    return evaluate(home, rounds=rounds, seeds=seeds, out=out)


def optimize_retrieval(
    home: ProjectHome,
    *,
    out: Path | None = None,
    trials: int = 16,
    seed: int = 0,
    max_steps: int = 600,
) -> dict[str, Any]:
    from evaluation.retrieval_tune import TuneSettings, tune_retrieval

    settings = TuneSettings(trials=trials, seed=seed, max_steps=max_steps)
    target = out or home.reports / "retrieval_tune.json"
    report = tune_retrieval(home, target, settings)
    return report | {"path": str(target), "job_config": str(target.with_suffix(".yaml"))}


def optimize_ranking(
    home: ProjectHome,
    *,
    out: Path | None = None,
    trials: int = 16,
    seed: int = 0,
    max_steps: int = 2000,
    config: Path | None = None,
) -> dict[str, Any]:
    from evaluation.ranking import RankingEvalConfig, load_eval_config
    from evaluation.ranking_tune import RankingTuneSettings, tune_ranking
    from training.job import config_file
    from training.ranking.config import RankingJobConfig, load_job_config

    path = config_file("ranking", config)
    job = load_job_config(path) if path else RankingJobConfig()
    scoring = load_eval_config(path) if path else RankingEvalConfig()
    settings = RankingTuneSettings(trials=trials, seed=seed, max_steps=max_steps, job=job)
    target = out or home.reports / "ranking_tune.json"
    report = tune_ranking(home, target, settings, scoring)
    return report | {"path": str(target), "job_config": str(target.with_suffix(".yaml"))}


def evaluate_retrieval(
    home: ProjectHome,
    *,
    seeds: int = 3,
    out: Path | None = None,
    events: Path | None = None,
    converged: bool = True,
) -> Any:
    from evaluation.retrieval import AblationConfig
    from evaluation.retrieval_report import evaluate_retrieval as evaluate

    config = AblationConfig() if converged else AblationConfig(converged=None)
    path = out or home.reports / "retrieval.json"
    return evaluate(home, path, seeds=seeds, events=events, config=config)


def report(home: ProjectHome, out: Path | None = None) -> Path:
    from evaluation.report import write_report

    return write_report(home, out or home.reports / "index.md")
