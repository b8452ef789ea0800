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

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.serve import Application

from pinfeed.artifacts.runs import load_run
from pinfeed.errors import ConfigError
from serving.config import (
    ActiveModels,
    DeploymentSettings,
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
logger = logging.getLogger(__name__)


def build_app(config: ServingConfig, deployments: Sequence[DeploymentSettings] = ()) -> Application:
    """Check the run to serve and that the online store holds what it reads
    (`serving.stages.store_health`), then bind the graph with the run as the models'
    `user_config`."""
    check_home(config)
    run = load_run(config.project.artifacts, config.run_id)
    store = connect(config.project, config.store_url, GATE_TIMEOUT_S)
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


def check_home(config: ServingConfig) -> None:
    """Refuse a home that is not a project (`home` unset and the builder's $PINFEED_HOME or
    working directory elsewhere, as under `serve deploy` to a cluster started in another
    folder), naming the two ways to set it."""
    if not (config.project.feature_repo / "feature_store.yaml").is_file():
        raise ConfigError(
            f"home: {config.home} holds no feature_repo/feature_store.yaml; set `home:` in the "
            "config's args, or PINFEED_HOME in the environment of the process that builds the "
            "app (`serve run`, or `ray start` under `serve deploy`)"
        )


def app_builder(args: dict[str, Any]) -> Application:
    """`serve run serving/config.yaml`: Serve passes the `args:` block and applies the
    `deployments:` block itself."""
    return build_app(parse_serving_config(args))


def requested_cpus(deployments: Sequence[DeploymentSettings]) -> float:
    """CPUs the deployments ask for when Serve starts them (replicas at start x num_cpus)."""
    return sum(d.replicas_at_start * d.ray_actor_options.num_cpus for d in deployments)


def fit_to_cluster(
    deployments: Sequence[DeploymentSettings], cpus: float, gpus: float
) -> tuple[DeploymentSettings, ...]:
    """Scale the CPU requests down (keeping their ratios) when the replicas would ask for more
    than 90% of `cpus`, and drop GPU requests on a cluster without GPUs, so a config written
    for a bigger cluster still deploys on a laptop instead of waiting for resources forever."""
    wanted = requested_cpus(deployments)
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
    host: str | None = None,
    port: int | None = None,
) -> str:
    """Deploy the app of `config_path` (with `overrides` on its args) on the connected Ray
    cluster (starting a local one if none), listening where the file's `http_options` say
    unless `host`/`port` are given; returns the base URL. The same app, deployments and
    http options as `serve run config_path`, except on a cluster with fewer CPUs than the file
    asks for: there the CPU requests are scaled down (with a warning) where `serve run` would
    wait for resources forever."""
    import ray

    serve_file = load_serve_file(config_path, overrides=overrides)
    config = serve_file.args
    # here as well as in build_app (which Serve runs in its controller): the refusal reaches
    # the operator's terminal as one line, not inside a failed deployment's status
    require_loaded(
        connect(config.project, config.store_url, GATE_TIMEOUT_S), config.allow_empty_store
    )
    if not ray.is_initialized():
        serve_environment()  # before Ray starts: its processes read it once
        ray.init(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    cpus = resources.get("CPU", 1.0)
    fitted = fit_to_cluster(serve_file.deployments, cpus, resources.get("GPU", 0.0))
    if fitted != serve_file.deployments:
        logger.warning(
            "%s asks for %.2f CPUs (and GPUs: %s) on a cluster with %.2f CPUs and %s GPUs: "
            "requests scaled to fit",
            config_path,
            requested_cpus(serve_file.deployments),
            sum(d.ray_actor_options.num_gpus for d in serve_file.deployments) or "none",
            cpus,
            resources.get("GPU", 0.0) or "no",
        )
    fitted_file = serve_file.model_copy(update={"deployments": fitted})
    return deploy(
        fitted_file,
        host=serve_file.host if host is None else host,
        port=serve_file.port if port is None else port,
    )


def serve_forever(
    config_path: Path = CONFIG_FILE,
    overrides: dict[str, Any] | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """`pinfeed serve`: deploy, tell `on_ready` the URL, block until interrupted, then shut
    down (also when the deploy itself fails, so no half-started app is left behind)."""
    try:
        url = serve_app(config_path, overrides, host=host, port=port)
        if on_ready is not None:
            on_ready(url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
