"""`pinfeed evaluate closed-loop`: the loop end to end over real HTTP, per seed on a project
home of its own:

1. generate a synthetic world whose period ends today, build features, materialise, train both
   models (run A) with the real jobs, compute cluster rewards offline;
2. deploy the Serve app (local Ray; SQLite and local logs, or Redis where REDIS_URL is set) and let the generator's users be its
   clients for `rounds` rounds: each asks for a feed, engages as the generator's users engage
   (`evaluation.closed_loop.SimClients`) and posts its feedback;
3. ingest the served log and the feedback log (`pinfeed data ingest-served`), rebuild features
   and reload them, recompute rewards, rebuild the training sets, train run B, and switch the
   running app to it through `/admin/reload` (no restart);
4. `rounds` more rounds; ingest again and reconcile everything acknowledged and served.

The report (`--out`, JSON) holds per phase the engagement rate, long-click rate and interest
shares with 95% intervals over seeds, per seed the ingestion reconciliation, and the totals
`acknowledged_lost`, `served_impressions`, `ingested_impressions`.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from rich.console import Console

from evaluation.closed_loop import (
    ClientRound,
    SimClients,
    merge_rounds,
    phase_summary,
    plot_rounds,
)
from feature_repo.homes import create_home
from feature_repo.pipeline.clusters import users_with_clusters
from feature_repo.store import open_store
from pinfeed.artifacts.layout import new_run_id
from pinfeed.config import FrozenModel
from pinfeed.connection import redis_url_from_env
from pinfeed.errors import PinfeedError
from pinfeed.synthetic import GeneratorConfig
from pinfeed.traffic.feedback_log import open_feedback_log
from pinfeed.traffic.served import open_served_log
from pinfeed_cli import steps
from pinfeed_cli.pipeline import run_pipeline
from serving.app import CONFIG_FILE
from serving.client import post_json
from serving.config import (
    ADMIN_TOKEN_ENV,
    ActorOptions,
    ServeFile,
    ServingConfig,
    load_serve_file,
)
from serving.deploy import deploy
from serving.stages.feedback import FEEDBACK_LOG

SKEW_COUNTS = ("rows", "matched", "mismatched", "online_only", "offline_only")
FEATURE_LOG_FLUSH_S = ServingConfig.model_fields["feature_log_flush_s"].default
"""How often the Recommender replicas write logged feature vectors (ServingConfig's default)."""
PHASES = ("before retraining", "after retraining on served traffic")


class ClosedLoopConfig(FrozenModel):
    """How big one seed's loop is (the defaults take about eight minutes on 2 cores)."""

    preset: str = Field("small", description="generator preset of each seed's world")
    world: dict[str, Any] = Field(default_factory=dict, description="generator overrides")
    rounds: int = Field(4, ge=1, description="rounds per phase")
    users_per_round: int = Field(100, ge=1, description="clients asking per round")
    k: int = Field(20, ge=1, le=200, description="pins per feed")
    clients: int = Field(8, ge=1, description="clients asking at once")
    retrieval_epochs: int = Field(2, ge=1)
    ranking_epochs: int = Field(1, ge=1)
    window_s: float = Field(86_400.0, gt=0, description="engagement credit window")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_home(root: Path, seed: int, config: ClosedLoopConfig) -> tuple[Any, str]:
    """A home whose events end today, trained (run A) and with offline rewards."""
    home = create_home(root)
    days = GeneratorConfig.preset(config.preset, **config.world).days
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    quiet = Console(file=io.StringIO())
    overrides = {**config.world, "start": today - timedelta(days=days)}
    run_pipeline(
        home, preset=config.preset, seed=seed, console=quiet, generator_overrides=overrides,
        serve=False, stop_after="training sets",
    )  # fmt: skip
    return home, _train(home, config)


def _train(home: Any, config: ClosedLoopConfig) -> str:
    run_id = new_run_id()
    steps.train(home, "retrieval", run_id=run_id, epochs=config.retrieval_epochs)
    steps.train(home, "ranking", run_id=run_id, epochs=config.ranking_epochs)
    steps.rewards(home)
    return run_id


def _deploy(home: Any, run_id: str) -> str:
    """The app of serving/config.yaml on `home`, every deployment at 0 CPUs (training jobs
    share the machine), on a free port; its base URL."""
    serve_file = load_serve_file(CONFIG_FILE, overrides={"home": str(home.root), "run_id": run_id})
    zero = ActorOptions(num_cpus=0, num_gpus=0)
    deployments = tuple(
        d.model_copy(update={"ray_actor_options": zero}) for d in serve_file.deployments
    )
    return deploy(
        ServeFile(args=serve_file.args, deployments=deployments),
        host="127.0.0.1",
        port=_free_port(),
    )


class _Traffic:
    """What the clients were told: served item count and acknowledged event ids."""

    def __init__(self) -> None:
        self.served = 0
        self.acknowledged: set[str] = set()
        self.request_ids: set[int] = set()
        self._lock = threading.Lock()

    def add(self, request_id: int, served: int, acknowledged: list[str]) -> None:
        with self._lock:
            self.served += served
            self.request_ids.add(request_id)
            self.acknowledged.update(acknowledged)


def _client_turn(
    base_url: str, clients: SimClients, user: int, request_id: int, k: int, traffic: _Traffic
) -> ClientRound:
    answer = post_json(
        f"{base_url}/recommend",
        {"user_id": user, "k": k},
        headers={"x-request-id": str(request_id)},
    )
    pins = [item["pin_id"] for item in answer["items"]]
    events, counts = clients.react(user, pins, np.random.default_rng(request_id))
    accepted = post_json(
        f"{base_url}/feedback",
        {"events": [{**e, "request_id": answer["request_id"]} for e in events]},
    )
    traffic.add(int(answer["request_id"]), len(pins), accepted["event_ids"])
    return counts


def _phase(
    base_url: str,
    clients: SimClients,
    users: list[int],
    seed: int,
    phase: int,
    config: ClosedLoopConfig,
    traffic: _Traffic,
) -> list[ClientRound]:
    rounds = []
    rng = np.random.default_rng([seed, phase])
    for r in range(config.rounds):
        chosen = rng.choice(users, size=min(config.users_per_round, len(users)), replace=False)
        base = (1 + seed * 10 + phase) * 10**12 + r * 10**6  # apart from generated ids
        asks = [(int(user), base + i) for i, user in enumerate(chosen)]
        with ThreadPoolExecutor(config.clients) as pool:
            turns = list(
                pool.map(lambda ask: _client_turn(base_url, clients, *ask, config.k, traffic), asks)
            )
        rounds.append(merge_rounds(turns))
    return rounds


def _wait_recorded(home: Any, served: int, timeout_s: float = 60.0) -> None:
    """Until the served log holds every item the clients were served (the Recommender
    replicas write it from a queue)."""
    log = open_served_log(
        home.data / "serving", redis_url_from_env(), open_store(home).project, 1.0
    )
    deadline = time.monotonic() + timeout_s
    while (recorded := len(log.read_all())) < served:
        if time.monotonic() > deadline:
            raise PinfeedError(
                f"the served log holds {recorded:,} of {served:,} served items after "
                f"{timeout_s:g} s (dropped under overload? see the Recommender's status)"
            )
        time.sleep(0.2)


def _retrain(home: Any, config: ClosedLoopConfig, seed: int) -> tuple[str, dict[str, Any]]:
    report = steps.ingest_served(home, window_s=config.window_s)
    steps.build_features(home)
    first_served = datetime.now(UTC) - timedelta(days=1)
    steps.materialize(home, since=first_served)
    steps.training_sets(home, seed)
    return _train(home, config), report.as_dict()


def _served_in_training_set(home: Any, request_ids: set[int]) -> int:
    import pyarrow.parquet as pq

    from training.training_sets import RANKING_NAME

    table = pq.read_table(home.training_sets / f"{RANKING_NAME}.parquet", columns=["request_id"])
    present = set(table.column("request_id").to_pylist())
    return len(request_ids & present)


def run_seed(root: Path, seed: int, config: ClosedLoopConfig, console: Console) -> dict[str, Any]:
    """One seed's loop (module docstring); its phases' rounds and its reconciliation."""
    from ray import serve

    console.print(f"[bold]seed {seed}[/]: building the world and run A")
    home, run_a = _prepare_home(root / f"seed-{seed}", seed, config)
    clients = SimClients.of_event_set(home.events)
    users = users_with_clusters(home.features)
    token = secrets.token_hex(16)
    user_token = os.environ.get(ADMIN_TOKEN_ENV)
    os.environ[ADMIN_TOKEN_ENV] = token
    base_url = _deploy(home, run_a)
    traffic = _Traffic()
    try:
        began = datetime.now(UTC)
        first = _phase(base_url, clients, users, seed, 0, config, traffic)
        _wait_recorded(home, traffic.served)
        time.sleep(3 * FEATURE_LOG_FLUSH_S)  # the replicas' feature logs are written
        skew_before = _skew(home, began, datetime.now(UTC))  # before the rebuild rewrites history
        console.print(f"seed {seed}: phase 1 done, retraining on served traffic")
        phase_one_ids = set(traffic.request_ids)
        run_b, first_ingest = _retrain(home, config, seed)
        post_json(
            f"{base_url}/admin/reload", {"run_id": run_b}, timeout_s=300,
            headers={"x-admin-token": token},
        )  # fmt: skip
        began = datetime.now(UTC)
        second = _phase(base_url, clients, users, seed, 1, config, traffic)
        _wait_recorded(home, traffic.served)
        time.sleep(3 * FEATURE_LOG_FLUSH_S)
        skew_after = _skew(home, began, datetime.now(UTC))
    finally:
        serve.shutdown()
        if user_token is None:
            os.environ.pop(ADMIN_TOKEN_ENV, None)
        else:
            os.environ[ADMIN_TOKEN_ENV] = user_token
    final = steps.ingest_served(home, window_s=config.window_s)
    project = open_store(home).project
    logged = open_feedback_log(
        home.data / "serving" / FEEDBACK_LOG, redis_url_from_env(), project
    ).read_all()
    return {
        "seed": seed,
        "home": str(home.root),
        "runs": [run_a, run_b],
        "phases": [first, second],
        "served_impressions": traffic.served,
        "acknowledged_events": len(traffic.acknowledged),
        "acknowledged_lost": len(traffic.acknowledged - {r.event_id for r in logged}),
        "ingest_after_phase_1": first_ingest,
        "ingest": final.as_dict(),
        "served_requests_in_new_training_set": _served_in_training_set(home, phase_one_ids),
        "phase_1_requests": len(phase_one_ids),
        "skew": _combined([skew_before, skew_after]),
    }


def _skew(home: Any, since: datetime, until: datetime) -> dict[str, Any]:
    """The row-level skew of the vectors logged in [since, until) (`evaluation.skew`). Each
    phase is compared before anything rebuilds the offline tables it was served from: a
    rebuild recomputes user clusters (one run at the new end of the events) and so removes the
    rows a point-in-time join at an earlier request time would find."""
    from evaluation.skew import skew_report

    report = skew_report(open_store(home), since=since, until=until)
    return {
        "match_rate": report["match_rate"],
        "compared_values": report["compared_values"],
        "matched_values": report["matched_values"],
        "rows": report["rows"],
        "skewed_features": {
            name: {k: report["features"][name][k] for k in SKEW_COUNTS}
            for name in report["skewed_features"]
        },
    }


def _combined(phases: list[dict[str, Any]]) -> dict[str, Any]:
    compared = sum(p["compared_values"] for p in phases)
    matched = sum(p["matched_values"] for p in phases)
    return {
        "match_rate": matched / compared if compared else 1.0,
        "compared_values": compared,
        "matched_values": matched,
        "phases": phases,
    }


def _skewed_features(runs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per feature that differs anywhere: its counts summed over seeds and phases."""
    totals: dict[str, dict[str, int]] = {}
    for run in runs:
        for phase in run["skew"]["phases"]:
            for name, counts in phase["skewed_features"].items():
                total = totals.setdefault(name, dict.fromkeys(SKEW_COUNTS, 0))
                for key in SKEW_COUNTS:
                    total[key] += counts[key]
    return totals


def closed_loop(
    workdir: Path, seeds: int, config: ClosedLoopConfig, out: Path, console: Console
) -> dict[str, Any]:
    """Every seed's loop, summarised over seeds, written to `out` (JSON)."""
    began = time.perf_counter()
    runs = [run_seed(workdir, seed, config, console) for seed in range(seeds)]
    report = {
        "phases": [
            phase_summary(name, [run["phases"][i] for run in runs]) for i, name in enumerate(PHASES)
        ],
        "acknowledged_lost": sum(r["acknowledged_lost"] for r in runs),
        "served_impressions": sum(r["served_impressions"] for r in runs),
        "ingested_impressions": sum(r["ingest"]["ingested_impressions"] for r in runs),
        "skew": {
            "match_rate": sum(r["skew"]["matched_values"] for r in runs)
            / max(sum(r["skew"]["compared_values"] for r in runs), 1),
            "skewed_features": _skewed_features(runs),
        },
        "seeds": [{k: v for k, v in r.items() if k != "phases"} for r in runs],
        "config": config.model_dump(mode="json") | {"seeds": seeds},
        "seconds": time.perf_counter() - began,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    plot_rounds(report, out.with_suffix(".png"))
    return report
