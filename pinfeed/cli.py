"""The `pinfeed` command line: one sub-command per job, the same verbs as the modules.

Commands are thin: they parse options, call one library function and print its result. Heavy
imports (Feast, torch, Ray) happen inside the command bodies, so `pinfeed data ...` starts in
a fraction of a second and `pinfeed` itself imports nothing from training/ or serving/ at load
time. Project errors (`PinfeedError`) become a one-line message and exit code 2, never a trace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pinfeed.errors import PinfeedError
from pinfeed.home import ProjectHome

app = typer.Typer(
    help="pinfeed: features, training, evaluation and serving for a recommender.",
    no_args_is_help=True,
)
data_app = typer.Typer(
    help="Event data: generate synthetic events, import real logs, validate.", no_args_is_help=True
)
features_app = typer.Typer(help="Offline features and the Feast repo.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
evaluate_app = typer.Typer(
    help="Prove each method on data: reports under reports/.", no_args_is_help=True
)
app.add_typer(evaluate_app, name="evaluate")
train_app = typer.Typer(
    help="Train with Ray Train and export to ONNX (= python -m training.job).", no_args_is_help=True
)
app.add_typer(train_app, name="train")
optimize_app = typer.Typer(help="Tune serving-time parameters offline.", no_args_is_help=True)
app.add_typer(optimize_app, name="optimize")

ConfigOption = Annotated[
    Path | None, typer.Option(help="Job config YAML (default: configs/<job>.yaml).")
]
RunOption = Annotated[
    str | None,
    typer.Option(help="Artifacts run id (default: UTC time for training, newest run otherwise)."),
]

console = Console()
F = TypeVar("F", bound=Callable[..., object])

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="Project home holding feature_repo/ and data/ (default: $PINFEED_HOME or .)."
    ),
]


def _home(home: Path | None) -> ProjectHome:
    return ProjectHome(home.resolve()) if home else ProjectHome.from_env()


def _counts_table(title: str, counts: dict[str, object]) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("value", justify="right")
    for name, value in counts.items():
        shown = (
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        )
        table.add_row(name, shown)
    return table


def project_errors(command: F) -> F:
    """Turn the project's own errors into a clear message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except PinfeedError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


@data_app.command("generate")
@project_errors
def data_generate(
    preset: Annotated[
        Literal["small", "medium"], typer.Option(help="Size of the synthetic world.")
    ] = "small",
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives the same events.")
    ] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <home>/data/events).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Generate a synthetic event set (see docs/data.md for the generative model)."""
    from pinfeed.synthetic import GeneratorConfig, generate_and_write

    target = out or _home(home).events
    summary = generate_and_write(GeneratorConfig.preset(preset, seed=seed), target)
    console.print(summary)
    console.print(f"events written to {target}")


@data_app.command("import")
@project_errors
def data_import(
    interactions: Annotated[
        Path,
        typer.Option(help="CSV or parquet log: user_id, item_id, timestamp, event[, dwell_s]."),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: <home>/data/events).")
    ] = None,
    skip_bad: Annotated[
        Path | None,
        typer.Option(
            help="Write bad rows to this CSV and go on, instead of stopping at the first."
        ),
    ] = None,
    item_embeddings: Annotated[
        Path | None,
        typer.Option(help="Parquet of item_id, embedding to use instead of learned embeddings."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Import a real interaction log into the event schema."""
    from pinfeed.importer import ImportConfig, import_interactions

    target = out or _home(home).events
    config = ImportConfig(item_embeddings=item_embeddings)
    result = import_interactions(interactions, target, config=config, rejects=skip_bad)
    console.print(_counts_table("import", result.summary()))
    if skip_bad is not None and result.rows_rejected:
        console.print(f"[yellow]{result.rows_rejected:,} bad row(s) written to {skip_bad}[/]")


@data_app.command("validate")
@project_errors
def data_validate(
    events: Annotated[
        Path | None, typer.Option(help="Event set folder (default: <home>/data/events).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Check every row of an event set against the contract; name each bad row's problem."""
    from pinfeed.events import read_event_set
    from pinfeed.validate import validate

    report = validate(read_event_set(events or _home(home).events))
    for table in report.tables.values():
        status = "[green]ok[/]" if table.ok else f"[red]{len(table.problems)} bad row(s)[/]"
        console.print(f"{table.table}: {table.rows} rows, {status}")
        for row, field, reason in table.problems[:20]:
            console.print(f"  row {row}: {field}: {reason}")
    if not report.ok:
        raise typer.Exit(code=1)


@features_app.command("build")
@project_errors
def features_build(
    events: Annotated[
        Path | None, typer.Option(help="Event set folder (default: <home>/data/events).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Compute the event-timestamped feature tables and the user interest clusters."""
    from feature_repo.pipeline import build_features
    from pinfeed.events import read_event_set

    project = _home(home)
    result = build_features(read_event_set(events or project.events), project.features)
    counts = {f"{name} rows": rows for name, rows in result.rows.items()}
    counts.update({f"{stage} s": f"{seconds:.1f}" for stage, seconds in result.seconds.items()})
    console.print(_counts_table(f"features in {result.out}", counts))


@features_app.command("apply")
@project_errors
def features_apply(home: HomeOption = None) -> None:
    """Register the feature definitions (same as `feast -c feature_repo apply`)."""
    from feature_repo.store import apply_definitions, open_store

    store = open_store(_home(home))
    apply_definitions(store)
    console.print(f"applied feature repo to {store.config.online_store.type} online store")


@features_app.command("materialize")
@project_errors
def features_materialize(
    end: Annotated[
        datetime | None,
        typer.Option(help="Load feature values up to this time (default: now, UTC)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Load the latest feature values into the online store (incremental)."""
    from feature_repo.store import materialize, open_store

    stamp = (end or datetime.now(UTC)).astimezone(UTC)
    materialize(open_store(_home(home)), end=stamp)
    console.print(f"materialized up to {stamp.isoformat()}")


@features_app.command("rewards")
@project_errors
def features_rewards(
    since: Annotated[
        datetime | None,
        typer.Option(
            help="Count impressions from here (default: the reward window before --as-of)."
        ),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(help="Stamp of the recomputed rewards (default: the latest clustering)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Recompute cluster rewards from the logs, write the table and materialise it."""
    from feature_repo.rewards_job import run_rewards_job
    from feature_repo.store import open_store

    project = _home(home)
    result = run_rewards_job(
        project,
        since=since.astimezone(UTC) if since else None,
        as_of=as_of.astimezone(UTC) if as_of else None,
        store=open_store(project),
    )
    console.print(
        f"rewards for {result.clusters:,} clusters ({result.clusters_with_data:,} with data, mean"
        f" {result.mean_reward:.3f}) as of {result.as_of.isoformat()}: {result.path}"
    )


@evaluate_app.command("query-reward")
@project_errors
def evaluate_query_reward(
    rounds: Annotated[
        int, typer.Option(min=2, help="Simulated rounds (4 per simulated day).")
    ] = 60,
    seeds: Annotated[
        int, typer.Option(min=1, help="Simulation seeds; intervals are over seeds.")
    ] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/query_reward.json).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Closed-loop simulation: count vs reward_offline vs reward_realtime query selection."""
    from evaluation.query_reward import evaluate_query_reward as evaluate
    from evaluation.query_reward import format_comparison

    result = evaluate(_home(home), rounds=rounds, seeds=seeds, out=out)
    console.print(format_comparison(result.report))
    console.print(f"report: {result.json_path} and {result.png_path}")


def _train(job: str, config: Path | None, run_id: str | None, home: Path | None) -> None:
    from training.job import main as job_main

    argv = [
        job,
        "--config",
        str(config or Path("configs") / f"{job}.yaml"),
        "--home",
        str(_home(home).root),
    ]
    if run_id:
        argv += ["--run-id", run_id]
    code = job_main(argv)
    if code:
        raise typer.Exit(code=code)


@train_app.command("retrieval")
def train_retrieval(
    config: ConfigOption = None, run_id: RunOption = None, home: HomeOption = None
) -> None:
    """Two-tower retrieval on the dual positive signal; exports towers + ANN index."""
    _train("retrieval", config, run_id, home)


@train_app.command("ranking")
def train_ranking(
    config: ConfigOption = None, run_id: RunOption = None, home: HomeOption = None
) -> None:
    """Four-head ranker + single-head baseline; exports the ranker and utility.json."""
    _train("ranking", config, run_id, home)


def _ranking_run(home: ProjectHome, run_id: str | None) -> Path | None:
    from training.ranking.job import ranking_run_dir

    return ranking_run_dir(home, run_id) if run_id else None


@evaluate_app.command("retrieval")
@project_errors
def evaluate_retrieval(
    seeds: Annotated[
        int, typer.Option(min=1, help="Training seeds per variant (mean and std over them).")
    ] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/retrieval.json).")
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(help="Evaluate this event set (e.g. an import) in a temporary home instead."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Ablation of the positive signal: Recall@K of held-out conversions, exact and through the index."""
    from evaluation.retrieval_report import evaluate_retrieval as evaluate

    project = _home(home)
    report = evaluate(
        project, out or project.reports / "retrieval.json", seeds=seeds, events=events
    )
    console.print(report.markdown_path.read_text())
    console.print(f"report: {report.json_path}, chart: {report.chart_path}")


@evaluate_app.command("ranking")
@project_errors
def evaluate_ranking(
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/ranking.json).")
    ] = None,
    config: Annotated[Path, typer.Option(help="Ranking YAML (its evaluation: section).")] = Path(
        "configs/ranking.yaml"
    ),
    run_id: RunOption = None,
    home: HomeOption = None,
) -> None:
    """Per-head AUC, PR-AUC, log loss, Brier and ECE before/after calibration, plus plots."""
    from evaluation.ranking import evaluate_ranking as evaluate
    from evaluation.ranking import load_eval_config

    project = _home(home)
    target = out or project.reports / "ranking.json"
    report = evaluate(
        project, target, run_dir=_ranking_run(project, run_id), config=load_eval_config(config)
    )
    for head, metrics in report["mtl"].items():
        console.print(
            f"{head}: PR-AUC {metrics['pr_auc']:.4f} (single head {report['single_head'][head]['pr_auc']:.4f}), "
            f"ECE {metrics['ece_raw']:.4f} -> {metrics['ece_cal']:.4f}, Brier {metrics['brier_raw']:.4f} -> {metrics['brier_cal']:.4f}"
        )
    console.print(f"report: {target}")


@optimize_app.command("utility")
@project_errors
def optimize_utility(
    trials: Annotated[
        int | None, typer.Option(min=2, help="Trials per method (default: the config's, 30).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Search seed.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report JSON (default: <home>/reports/utility.json).")
    ] = None,
    config: Annotated[Path, typer.Option(help="Ranking YAML (its utility: section).")] = Path(
        "configs/ranking.yaml"
    ),
    run_id: RunOption = None,
    home: HomeOption = None,
) -> None:
    """Ax Bayesian optimisation of the utility weights vs random search and hand-picked weights."""
    from evaluation.utility_search import load_search_config
    from evaluation.utility_search import optimize_utility as optimize

    project = _home(home)
    target = out or project.reports / "utility.json"
    report = optimize(
        project,
        target,
        trials=trials,
        seed=seed,
        run_dir=_ranking_run(project, run_id),
        config=load_search_config(config),
    )
    for method in ("best", "random_search", "hand_picked"):
        arm = report[method]
        weights = ", ".join(f"{h} {w:.3f}" for h, w in arm["weights"].items())
        console.print(
            f"{method}: long_click PR-AUC {arm['long_click_pr_auc']:.5f} ({weights}), constraints met: {arm['constraints_met']}"
        )
    console.print(f"report: {target}; weights written to the run's utility.json")


@app.command("serve")
@project_errors
def serve(
    config: Annotated[
        Path | None, typer.Option(help="Serve config YAML (default: serving/config.yaml).")
    ] = None,
    run_id: Annotated[
        str, typer.Option(help="Artifacts run under <home>/artifacts (default: the newest).")
    ] = "latest",
    port: Annotated[int, typer.Option(help="HTTP port of the Serve proxy.")] = 8000,
    home: HomeOption = None,
) -> None:
    """Deploy the Ray Serve app (same app as `serve run serving/config.yaml`) and block."""
    from serving.app import CONFIG_FILE, serve_forever

    overrides = {"home": str(_home(home).root), "run_id": run_id}
    console.print(f"serving on http://127.0.0.1:{port} (OpenAPI at /docs); Ctrl-C stops")
    serve_forever(config or CONFIG_FILE, overrides, port=port)


@app.command("run")
@project_errors
def run(
    seed: Annotated[int, typer.Option(help="Seed of the synthetic event set.")] = 0,
    keep_serving: Annotated[
        bool, typer.Option(help="Leave the Serve app running at the end.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """The main job end to end on the embedded defaults (small preset, SQLite, local Ray)."""
    from pinfeed.run import run_pipeline

    run_pipeline(_home(home), seed=seed, console=console, keep_serving=keep_serving)


def main() -> None:
    app()
