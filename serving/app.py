"""The serving graph, wired once with `.bind()`, and the entry points around it.

    Ingress ──► Recommender (Features, QuerySelector, Retriever, Scorer) ──► Ranker (@serve.batch)
       └──────► FeedbackSink (durable log -> realtime rewards)

- `build_app(config, deployments)`: the bound application; the run to serve (`latest` resolved
  to the newest complete run, here, once) becomes the model deployments' `user_config`.
- `app_builder(args)`: what Serve imports for `serve run serving/config.yaml`, `serve deploy`
  and `pinfeed serve` (`args:` block of the file).
- `serve_app(...)` / `serve_forever(...)`: `pinfeed serve`, deployed declaratively like `serve
  run` (`serving.deploy`), so `/admin/reload` is a lightweight in-place update.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.serve import Application

from pinfeed.artifacts.runs import load_run
from serving.config import (
    ActiveModels,
    DeploymentSettings,
    ServeFile,
    ServingConfig,
    load_serve_file,
    parse_serving_config,
    user_configs,
)
from serving.deploy import deploy, shutdown, token_digest
from serving.deployments.feedback_sink import FeedbackSink
from serving.deployments.ranker import Ranker
from serving.deployments.recommender import Recommender
from serving.environment import serve_environment
from serving.http.ingress import ingress_deployment
from serving.stages.online import connect
from serving.stages.store_health import GATE_TIMEOUT_S, require_loaded

CONFIG_FILE = Path(__file__).resolve().parent / "config.yaml"


def build_app(config: ServingConfig, deployments: Sequence[DeploymentSettings] = ()) -> Application:
    """Check the run to serve and that the online store holds what it reads
    (`serving.stages.store_health`), then bind the graph with the run as the models'
    `user_config`."""
    run = load_run(config.project.artifacts, config.run_id)
    store = connect(config.project, config.redis_url, GATE_TIMEOUT_S)
    require_loaded(store, config.allow_empty_store)
    models = user_configs(ActiveModels(run_id=run.run_id))
    settings = {d.name: d.options() for d in deployments}
    ranker = Ranker.options(**{"user_config": models["Ranker"], **settings.get("Ranker", {})})
    recommender = Recommender.options(
        **{"user_config": models["Recommender"], **settings.get("Recommender", {})}
    ).bind(config, ranker.bind(config))
    feedback = FeedbackSink.options(**settings.get("FeedbackSink", {})).bind(config)
    digest = config.admin_token_sha256 or token_digest(os.environ.get(config.admin_token_env))
    ingress = ingress_deployment().options(**settings.get("Ingress", {}))
    return ingress.bind(recommender, feedback, digest)


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
    cluster (starting a local one if none), fitted to its resources; returns the base URL."""
    import ray

    serve_file = load_serve_file(config_path, overrides=overrides)
    config = serve_file.args
    # here as well as in build_app (which Serve runs in its controller): the refusal reaches
    # the operator's terminal as one line, not inside a failed deployment's status
    require_loaded(
        connect(config.project, config.redis_url, GATE_TIMEOUT_S), config.allow_empty_store
    )
    if not ray.is_initialized():
        serve_environment()  # before Ray starts: its processes read it once
        ray.init(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    fitted = fit_to_cluster(
        serve_file.deployments, resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    )
    return deploy(ServeFile(args=serve_file.args, deployments=fitted), host=host, port=port)


def serve_forever(
    config_path: Path = CONFIG_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """`pinfeed serve`: deploy, block until interrupted, then shut down (also when the deploy
    itself fails, so no half-started app is left behind)."""
    try:
        serve_app(config_path, overrides, host=host, port=port)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
