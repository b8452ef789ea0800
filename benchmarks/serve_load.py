"""Closed-loop HTTP load on the serving pipeline versus the obvious one-process alternative, plus
the in-process floor. Not a test: run it by hand.

    python -m benchmarks.serve_load --root /tmp/pinfeed-bench --pins 100000 --users 2000 \
        --levels 1,2,4,8,16 --seconds 10

(a) serve:    this app on Ray Serve (Ingress -> Recommender -> Ranker), HTTP on loopback.
(b) fastapi:  one uvicorn process that per request calls Feast `get_online_features` for the user
              and for all candidate pins, runs the query tower and the ranker in torch eager,
              and searches the same faiss index.
(c) floor:    the serving stages called in-process, no Serve, no HTTP (ORT + index + online
              store reads + cached pin features), one request at a time.

The load runs in a separate process: C client threads, each with a keep-alive connection, send
requests back to back for `--seconds` per level. Reported per level: p50 / p99 latency (ms),
throughput (req/s), errors; and per variant the highest throughput reached with zero errors.
`--json FILE` also writes them as {variant: [{concurrency, p50_ms, p99_ms, rps, errors}, ...]}.

`--breakdown` adds where a Serve request's time goes, read from Ray's Prometheus endpoint after
the serve levels: Serve's own histograms (proxy end to end, each deployment's processing time)
and the Recommender's stage histogram (`pinfeed_stage_ms`: prepare, rank, finish), as means
(sum / count) over every request of the run; use it with one level, e.g. `--levels 1`.
`--open-loop 0.5,0.8,1.2` adds, per HTTP variant after its closed-loop levels, open-loop runs
(`benchmarks.open_loop`: Poisson arrivals at a fixed rate, latency from each request's
scheduled time, so queueing counts) at those fractions of the variant's best zero-error
closed-loop throughput; in the JSON as `<variant>_open_loop`: [{fraction, rate, sent, p50_ms,
p99_ms, rps, errors, degraded}].
`--root` is built on first use: a generated world of `--pins` pins through `pinfeed run`'s data
steps, both models trained briefly and exported by `training.quick`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.open_loop import OpenLoopResult, open_loop, summarise
from pinfeed.home import ProjectHome

if TYPE_CHECKING:
    from serving.config import ServingConfig

RUN_ID = "tiny-run"
HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class LevelResult:
    variant: str
    concurrency: int
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def _client(port: int, users: list[int], k: int, stop: float, out: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.perf_counter() < stop:
        body = json.dumps({"user_id": int(rng.choice(users)), "k": k})
        start = time.perf_counter()
        try:
            connection.request("POST", "/recommend", body, HEADERS)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out.append((time.perf_counter() - start, ok))


def _load(port: int, users: list[int], k: int, concurrency: int, seconds: float, queue) -> None:
    """Runs in its own process: `concurrency` closed-loop clients for `seconds`."""
    stop = time.perf_counter() + seconds
    results: list[tuple[float, bool]] = []
    threads = [
        threading.Thread(target=_client, args=(port, users, k, stop, results, i))
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(results)


def measure(
    variant: str, port: int, users: list[int], k: int, level: int, seconds: float
) -> LevelResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load, args=(port, users, k, level, seconds, queue))
    process.start()
    results = queue.get()
    process.join()
    latencies = np.array([t for t, ok in results if ok]) * 1000.0
    errors = sum(1 for _, ok in results if not ok)
    if len(latencies) == 0:
        return LevelResult(variant, level, float("nan"), float("nan"), 0.0, errors)
    return LevelResult(
        variant,
        level,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        len(latencies) / seconds,
        errors,
    )


def floor(home: Path, users: list[int], k: int, seconds: float) -> LevelResult:
    """The stages in-process, one request at a time."""
    from pinfeed.artifacts.runs import load_run
    from serving.config import ServingConfig
    from serving.stages.active import run_weights
    from serving.stages.online import connect
    from serving.stages.pipeline import Pipeline, RecommendQuery
    from serving.stages.ranker import RankerPool

    config = ServingConfig(home=home, run_id=RUN_ID)
    run = load_run(config.project.artifacts, RUN_ID)
    pipeline = Pipeline(config, connect(config.project, None), run, run_weights(run.layout.utility))
    ranker = RankerPool(config.project.artifacts, 1)
    rng = np.random.default_rng(0)
    latencies = []
    stop = time.perf_counter() + seconds
    request_id = 0
    while time.perf_counter() < stop:
        request_id += 1
        start = time.perf_counter()
        prepared = pipeline.prepare(RecommendQuery(request_id, int(rng.choice(users)), k))
        pipeline.finish(prepared, ranker.logits([prepared.inputs])[0])
        latencies.append(time.perf_counter() - start)
    ms = np.array(latencies) * 1000.0
    return LevelResult(
        "floor", 1, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms) / seconds, 0
    )


def start_serve(
    config: ServingConfig, port: int, model_replicas: int = 1, ranker_replicas: int | None = None
) -> str:
    """Start a local Ray (Serve's environment first) and deploy the app at 0 CPUs per replica
    with `model_replicas` Recommender and Ranker replicas (`ranker_replicas` Rankers where
    given); the healthy base URL."""
    import ray

    from serving.client import wait_healthy
    from serving.config import ActorOptions, DeploymentSettings, ServeFile
    from serving.deploy import deploy
    from serving.environment import serve_environment

    print("Serve environment:", serve_environment())
    ray.init(include_dashboard=False, log_to_driver=False)
    light = ActorOptions(num_cpus=0)
    replicas = {"Recommender": model_replicas, "Ranker": ranker_replicas or model_replicas}
    settings = tuple(
        DeploymentSettings(
            name=name,
            num_replicas=replicas.get(name, 1),
            max_ongoing_requests=ongoing,
            ray_actor_options=light,
        )
        for name, ongoing in (("Ingress", 64), ("Recommender", 8), ("Ranker", 16),
                              ("FeedbackSink", 16))
    )  # fmt: skip
    url = deploy(
        ServeFile(args=config, deployments=settings), host="127.0.0.1", port=port, timeout_s=600
    )
    wait_healthy(url, timeout_s=600)
    return url


def start_fastapi(home: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.serve_load_baseline", str(home), RUN_ID, str(port)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    from serving.client import wait_healthy

    wait_healthy(f"http://127.0.0.1:{port}", timeout_s=600)
    return process


BREAKDOWN = (
    ("HTTP request, end to end at the proxy", "ray_serve_http_request_latency_ms", {}),
    ("Ingress processing", "ray_serve_deployment_processing_latency_ms",
     {"deployment": "Ingress"}),
    ("Recommender processing", "ray_serve_deployment_processing_latency_ms",
     {"deployment": "Recommender"}),
    ("- prepare (online reads, selection, ANN, ranker inputs; on a worker thread)",
     "ray_pinfeed_stage_ms", {"stage": "prepare"}),
    ("- rank (Ranker handle call: hop, batch wait, ORT)", "ray_pinfeed_stage_ms",
     {"stage": "rank"}),
    ("- finish (scorer, top k)", "ray_pinfeed_stage_ms", {"stage": "finish"}),
    ("Ranker processing (batch wait + ORT)", "ray_serve_deployment_processing_latency_ms",
     {"deployment": "Ranker"}),
)  # fmt: skip


def stage_means(metrics_text: str) -> dict[str, float]:
    """{BREAKDOWN label: mean ms} from a Prometheus text page (histogram _sum / _count over
    the series whose labels match)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for label, name, wanted in BREAKDOWN:
        for line in metrics_text.splitlines():
            for suffix, into in (("_sum", sums), ("_count", counts)):
                if not line.startswith(name + suffix + "{"):
                    continue
                labels, value = line[len(name + suffix) :].rsplit(" ", 1)
                route = ROUTE if name.startswith("ray_serve_") else {}
                if all(f'{key}="{v}"' in labels for key, v in {**route, **wanted}.items()):
                    into[label] = into.get(label, 0.0) + float(value)
    return {label: sums[label] / counts[label] for label in sums if counts.get(label)}


ROUTE = {"route": "/recommend"}
"""Serve's own series are filtered to /recommend (the /healthz probes are series of their
own); the Recommender's stage histogram is observed in `recommend` only."""


def scrape_metrics(wait_s: float = 20.0) -> str:
    """Wait for Ray's metrics export (replicas report every few seconds), then read this
    node's Prometheus page."""
    import urllib.request

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    time.sleep(wait_s)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as page:
        return page.read().decode()


def table(results: list[LevelResult]) -> str:
    lines = [
        "| variant | concurrency | p50 ms | p99 ms | req/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.variant} | {r.concurrency} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.rps:.1f} | {r.errors} |"
        for r in results
    ]
    best = {}
    for r in results:
        if r.errors == 0 and r.rps > best.get(r.variant, (0.0, None))[0]:
            best[r.variant] = (r.rps, r)
    lines += [
        "",
        "| variant | best zero-error req/s | at concurrency | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {v} | {rps:.1f} | {r.concurrency} | {r.p99_ms:.1f} |" for v, (rps, r) in best.items()
    ]
    return "\n".join(lines)


def summary(results: list[LevelResult]) -> dict[str, list[dict[str, float | int | None]]]:
    """{variant: its levels}, NaN (no successful request) as null, for `--json`."""
    out: dict[str, list[dict[str, float | int | None]]] = {}
    for r in results:
        out.setdefault(r.variant, []).append(
            {
                "concurrency": r.concurrency,
                "p50_ms": None if np.isnan(r.p50_ms) else round(r.p50_ms, 3),
                "p99_ms": None if np.isnan(r.p99_ms) else round(r.p99_ms, 3),
                "rps": round(r.rps, 3),
                "errors": r.errors,
            }
        )
    return out


def best_rps(results: list[LevelResult], variant: str) -> float:
    """The variant's highest zero-error closed-loop throughput (0 when none)."""
    return max((r.rps for r in results if r.variant == variant and r.errors == 0), default=0.0)


def open_levels(
    port: int, users: list[int], k: int, best: float, fractions: list[float], seconds: float
) -> list[tuple[float, OpenLoopResult]]:
    """Open-loop runs at `fractions` of `best` req/s (none when no level was error-free)."""
    runs = []
    if best <= 0:
        print("no zero-error closed-loop level: open-loop runs skipped")
        return runs
    for fraction in fractions:
        rate = fraction * best
        run = open_loop(port, users, k, rate, seconds)
        runs.append((fraction, summarise(rate, seconds, run.outcomes)))
    return runs


def open_table(variant: str, runs: list[tuple[float, OpenLoopResult]]) -> str:
    lines = [
        f"| {variant}, open loop | fraction of best | target req/s | sent | p50 ms | p99 ms "
        "| ok req/s | errors | degraded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| | {f:.2f} | {r.rate:.1f} | {r.sent} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.rps:.1f} "
        f"| {r.errors} | {r.degraded} |"
        for f, r in runs
    ]
    return "\n".join(lines)


def open_summary(runs: list[tuple[float, OpenLoopResult]]) -> list[dict[str, float | int]]:
    return [
        {
            "fraction": f,
            "rate": round(r.rate, 3),
            "sent": r.sent,
            "p50_ms": round(r.p50_ms, 3),
            "p99_ms": round(r.p99_ms, 3),
            "rps": round(r.rps, 3),
            "errors": r.errors,
            "degraded": r.degraded,
        }
        for f, r in runs
    ]


def build_home(root: Path, users: int, pins: int) -> ProjectHome:
    """The bench home at `root`: events, features, online store, training sets (`pinfeed run`'s
    data steps) and run RUN_ID with quickly trained models, built on first use."""
    from feature_repo.homes import create_home
    from pinfeed_cli.pipeline import run_pipeline
    from training.quick import TORCH_DIR, quick_run

    if (root / "artifacts" / RUN_ID / TORCH_DIR).is_dir():
        return ProjectHome(root.resolve())
    root.mkdir(parents=True, exist_ok=True)
    home = create_home(root)
    world = {"users": users, "pins": pins, "topics": 20, "days": 3}
    run_pipeline(home, seed=5, generator_overrides=world, stop_after="training sets")
    quick_run(home, RUN_ID, keep_torch=True)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, required=True, help="bench project home (built if missing)"
    )
    parser.add_argument("--pins", type=int, default=100_000, help="corpus size when building")
    parser.add_argument("--users", type=int, default=2000, help="users when building")
    parser.add_argument("--levels", default="1,2,4,8,16", help="client concurrencies")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level")
    parser.add_argument("--k", type=int, default=20, help="pins returned per request")
    parser.add_argument("--variants", default="floor,serve,fastapi", help="which to run")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument(
        "--breakdown", action="store_true", help="per-stage means of the serve run (metrics)"
    )
    parser.add_argument(
        "--open-loop",
        default="",
        help="fractions of each variant's best closed-loop rate to run open loop, e.g. 0.5,0.8",
    )
    args = parser.parse_args()
    home = build_home(args.root, args.users, args.pins)
    from feature_repo.pipeline.clusters import users_with_clusters

    users = users_with_clusters(home.features, minimum=1)
    levels = [int(level) for level in args.levels.split(",")]
    variants = args.variants.split(",")
    fractions = [float(f) for f in args.open_loop.split(",") if f]
    results: list[LevelResult] = []
    opened: dict[str, list[tuple[float, OpenLoopResult]]] = {}
    breakdown: dict[str, float] = {}
    if "floor" in variants:
        results.append(floor(args.root.resolve(), users, args.k, args.seconds))
    if "serve" in variants:
        from ray import serve

        from serving.config import ServingConfig

        start_serve(ServingConfig(home=args.root.resolve(), run_id=RUN_ID), 8011)
        results += [measure("serve", 8011, users, args.k, c, args.seconds) for c in levels]
        if fractions:
            best = best_rps(results, "serve")
            opened["serve"] = open_levels(8011, users, args.k, best, fractions, args.seconds)
        if args.breakdown:
            page = scrape_metrics()
            breakdown = stage_means(page)
            if args.json is not None:  # the raw page beside the summary, for what is not parsed
                args.json.with_suffix(".prom").write_text(page)
        serve.shutdown()
    if "fastapi" in variants:
        baseline = start_fastapi(args.root.resolve(), 8012)
        try:
            results += [measure("fastapi", 8012, users, args.k, c, args.seconds) for c in levels]
            if fractions:
                best = best_rps(results, "fastapi")
                opened["fastapi"] = open_levels(8012, users, args.k, best, fractions, args.seconds)
        finally:
            baseline.terminate()
    print(table(results))
    for variant, runs in opened.items():
        print("\n" + open_table(variant, runs))
    if breakdown:
        print("\n| serve stage | mean ms |\n|---|---:|")
        print("\n".join(f"| {label} | {ms:.1f} |" for label, ms in breakdown.items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out: dict = {**summary(results)}
        out.update({f"{variant}_open_loop": open_summary(runs) for variant, runs in opened.items()})
        if breakdown:
            out["serve_stages_mean_ms"] = breakdown
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
