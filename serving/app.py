"""The serving graph, wired once with `.bind()`, and the entry points around it.

    Ingress ──► Recommender (Features, QuerySelector, Retriever, Scorer) ──► Ranker (@serve.batch)
       └──────► FeedbackSink (durable log -> realtime rewards)

- `build_app(config, deployments)`: the bound application (tests, `pinfeed serve`).
- `app_builder(args)`: what `serve run serving/config.yaml` imports (`args:` block of the file).
- `serve_app(...)` / `demo(...)`: the functions behind `pinfeed serve` and the last step of
  `pinfeed run` (deploy, send a few real HTTP requests, print, shut down).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from pinfeed.errors import ConfigError, DataNotFoundError
from serving.artifacts import UTILITY_FILE
from serving.config import DeploymentSettings, ServingConfig, load_serve_file, parse_serving_config
from serving.feedback_sink import FeedbackSink
from serving.ingress import ingress_deployment, token_digest
from serving.ranker import Ranker
from serving.recommender import Recommender
from serving.state import ServingState

APP_NAME = "pinfeed"
LATEST = "latest"
CONFIG_FILE = Path(__file__).resolve().parent / "config.yaml"


def latest_run(artifacts: Path) -> str:
    """The newest run (by name; run ids sort by time) holding both retrieval and ranking."""
    runs = sorted(
        path.name
        for path in artifacts.glob("*")
        if (path / "retrieval" / "manifest.json").is_file()
        and (path / "ranking" / "ranker.manifest.json").is_file()
    )
    if not runs:
        raise DataNotFoundError(
            f"{artifacts}: no run with both retrieval/ and ranking/ artifacts; run "
            "`pinfeed train retrieval` and `pinfeed train ranking` first"
        )
    return runs[-1]


def resolve_run(config: ServingConfig) -> ServingConfig:
    """Replace run_id `latest` by the newest complete run."""
    if config.run_id != LATEST:
        return config
    return config.model_copy(update={"run_id": latest_run(config.project.artifacts)})


def build_app(config: ServingConfig, deployments: Sequence[DeploymentSettings] = ()) -> Application:
    """Point the state at `config.run_id` with the run's weights, then bind the graph."""
    config = resolve_run(config)
    ServingState(config.state).initialise(
        config.run_id, config.project.artifacts / config.run_id / "ranking" / UTILITY_FILE
    )
    settings = {d.name: d.options() for d in deployments}
    ranker = Ranker.options(**settings.get("Ranker", {})).bind(config)
    recommender = Recommender.options(**settings.get("Recommender", {})).bind(config, ranker)
    feedback = FeedbackSink.options(**settings.get("FeedbackSink", {})).bind(config)
    digest = token_digest(os.environ.get(config.admin_token_env))
    ingress = ingress_deployment().options(**settings.get("Ingress", {}))
    return ingress.bind(config, recommender, feedback, digest)


def app_builder(args: dict[str, Any]) -> Application:
    """`serve run serving/config.yaml`: Serve passes the `args:` block and applies the
    `deployments:` block itself."""
    return build_app(parse_serving_config(args))


def fit_to_cluster(
    deployments: Sequence[DeploymentSettings], cpus: float, gpus: float
) -> tuple[DeploymentSettings, ...]:
    """Scale the CPU requests down (keeping their ratios) when the replicas would ask for more
    than 90% of `cpus`, and drop GPU requests on a cluster without GPUs, so a config written
    for a bigger cluster still deploys on a laptop instead of waiting for resources forever."""
    wanted = sum(d.num_replicas * d.ray_actor_options.num_cpus for d in deployments)
    factor = min(1.0, 0.9 * cpus / wanted) if wanted > 0 else 1.0
    fitted = []
    for settings in deployments:
        options = settings.ray_actor_options.model_copy(
            update={
                "num_cpus": settings.ray_actor_options.num_cpus * factor,
                "num_gpus": settings.ray_actor_options.num_gpus if gpus > 0 else 0.0,
            }
        )
        fitted.append(settings.model_copy(update={"ray_actor_options": options}))
    return tuple(fitted)


def serve_app(
    config_path: Path = CONFIG_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> str:
    """Deploy the app of `config_path` (with `overrides` on its args) on the connected Ray
    cluster (starting a local one if none); returns the base URL."""
    import ray

    serve_file = load_serve_file(config_path, overrides=overrides)
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    deployments = fit_to_cluster(
        serve_file.deployments, resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    )
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(serve_file.args, deployments), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def serve_forever(
    config_path: Path = CONFIG_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """`pinfeed serve`: deploy, print nothing, block until interrupted, then shut down."""
    serve_app(config_path, overrides, host=host, port=port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


def post_json(url: str, body: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
    """POST `body` as JSON; the decoded JSON answer (raises on a non-2xx status)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def wait_healthy(base_url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll GET /healthz until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"{base_url}/healthz did not answer in {timeout_s} s") from None
            time.sleep(0.5)


def sample_users(home: Path, count: int = 2) -> list[int]:
    """The first `count` users that have interest clusters (for the demo requests)."""
    import pyarrow.parquet as pq

    path = home / "data" / "features" / "user_clusters.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no clusters; run `pinfeed features build` first")
    users = pq.read_table(path, columns=["user_id"]).column("user_id").to_pylist()
    return sorted(set(users))[:count]


def demo(
    home: Path,
    user_ids: Sequence[int] | None = None,
    *,
    run_id: str = LATEST,
    k: int = 5,
    keep_serving: bool = False,
    port: int = 8000,
) -> list[dict[str, Any]]:
    """The last step of `pinfeed run`: deploy, ask for `k` pins for each user (default: two
    users with clusters) and one unknown user, send one click of feedback, return the answers
    (the caller prints them); shut down unless `keep_serving`."""
    users = list(user_ids) if user_ids is not None else sample_users(home)
    base = serve_app(CONFIG_FILE, {"home": str(home), "run_id": run_id}, port=port)
    try:
        wait_healthy(base)
        answers = [
            post_json(f"{base}/recommend", {"user_id": int(user), "k": k})
            for user in [*users, 2**62]
        ]
        first = answers[0]
        if first["items"]:
            post_json(
                f"{base}/feedback",
                {
                    "request_id": first["request_id"],
                    "pin_id": first["items"][0]["pin_id"],
                    "kind": "click",
                },
            )
        return answers
    finally:
        if not keep_serving:
            serve.shutdown()
