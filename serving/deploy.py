"""Deploying the app the way Serve's own CLI does (`serve run config.yaml`, `serve deploy`):
declaratively, from a config, so a later change of a deployment's `user_config` is a
lightweight in-place update (Serve calls `reconfigure` on every replica, on every node), never
a restart.

- `deploy(serve_file)`: start Serve if needed and apply the app's config; wait until RUNNING.
  `latest` is resolved here, on the deploying machine, so redeploying after a new run was
  trained changes the app's args and Serve rebuilds it with the new run.
- `apply_active_models(models)`: set the model deployments' `user_config`, keeping the rest of
  the live config (other apps, target capacity), and wait until every replica runs it.

The one file that uses Serve's controller client (`ray.serve.context._get_global_client`, what
the `serve` CLI itself uses); a Serve upgrade touches this file.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema, ServeInstanceDetails

from pinfeed.artifacts.layout import LATEST
from pinfeed.artifacts.runs import latest_run
from pinfeed.errors import ConfigError, PinfeedError
from serving.config import APP_NAME, ActiveModels, ServeFile, user_configs

IMPORT_PATH = "serving.app:app_builder"
POLL_S = 0.2
FAILED = {"UNHEALTHY", "DEPLOY_FAILED"}


class ReloadTimeout(PinfeedError):
    """Serve did not report every replica on the new models in time."""


def token_digest(token: str | None) -> str | None:
    """SHA-256 of the admin token: configs and replicas get the digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def app_schema(serve_file: ServeFile, app_name: str = APP_NAME) -> ServeApplicationSchema:
    """The application entry of a Serve config for `serve_file` (what serving/config.yaml
    holds, after pinfeed's overrides), with `latest` resolved to a run id. The admin token is
    read from the deploying process's environment and only its SHA-256 goes into the config:
    the app's replicas may run where that variable is not set."""
    args = serve_file.args
    update: dict[str, Any] = {}
    token = os.environ.get(args.admin_token_env)
    if args.admin_token_sha256 is None and token:
        update["admin_token_sha256"] = token_digest(token)
    if args.run_id == LATEST:
        update["run_id"] = latest_run(args.project.artifacts).run_id
    args = args.model_copy(update=update)
    return ServeApplicationSchema(
        name=app_name,
        route_prefix="/",
        import_path=IMPORT_PATH,
        args=args.model_dump(mode="json", exclude_none=True),
        deployments=[settings.serve_schema() for settings in serve_file.deployments],
    )


def _details() -> ServeInstanceDetails:
    return ServeInstanceDetails(**_get_global_client().get_serve_details())


def _live_applications(details: ServeInstanceDetails) -> dict[str, ServeApplicationSchema]:
    """The declaratively deployed apps that stay, with their configs (a re-apply must keep
    every one of them; one being deleted must not come back)."""
    return {
        name: app.deployed_app_config
        for name, app in details.applications.items()
        if app.deployed_app_config is not None and app.status.value != "DELETING"
    }


def _apply(details: ServeInstanceDetails, applications: dict[str, ServeApplicationSchema]) -> None:
    schema = ServeDeploySchema(
        applications=list(applications.values()), target_capacity=details.target_capacity
    )
    _get_global_client().deploy_apps(schema)


def wait_running(app_name: str = APP_NAME, timeout_s: float = 300.0) -> None:
    """Block until the app is RUNNING; a failed deploy raises with Serve's message."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = _details().applications.get(app_name)
        status = app.status.value if app is not None else "NOT_STARTED"
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise ConfigError(f"serve app {app_name!r} failed to deploy: {app.message}")
        if time.monotonic() > deadline:
            raise ConfigError(f"serve app {app_name!r} still {status} after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def deploy(serve_file: ServeFile, *, host: str, port: int, timeout_s: float = 300.0) -> str:
    """Start Serve (HTTP on host:port) if it is not running, deploy the app declaratively
    (replacing a previous deploy of the same name) and wait until it runs; the base URL Serve
    listens on (a Serve already running keeps its own host and port)."""
    serve.start(
        http_options={
            "host": host,
            "port": port,
            "request_timeout_s": serve_file.request_timeout_s,
        }
    )
    details = _details()
    live = _live_applications(details)
    live[APP_NAME] = app_schema(serve_file)
    _apply(details, live)
    wait_running(APP_NAME, timeout_s)
    http = _details().http_options
    return f"http://{http.host if http else host}:{http.port if http else port}"


def shutdown(timeout_s: float = 120.0) -> None:
    """`serve.shutdown()`, then wait until the Serve controller has exited, killing it when it
    is still there `timeout_s` after that call returned (so at most 30 s + `timeout_s` + a few
    seconds in all). `serve.shutdown` gives up after 30 s and returns while the controller may
    still be draining (in throughput-optimised mode an ingress replica drains for at least
    `RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`, 30 s by default); a `serve.start` in that
    window attaches to the dying controller and fails when it exits."""
    import ray

    if not ray.is_initialized():
        return  # nothing was started (`serve.shutdown` would start Ray only to find no Serve)
    serve.shutdown()
    deadline = time.monotonic() + timeout_s
    killed = False
    while ray.is_initialized() and (controller := _controller()) is not None:
        if time.monotonic() > deadline:
            if killed:
                raise ConfigError("the Serve controller is still alive 30 s after a kill")
            ray.kill(controller, no_restart=True)
            killed, deadline = True, time.monotonic() + 30.0
        time.sleep(POLL_S)


def _controller() -> Any:
    """The Serve controller's actor handle, None once it has exited."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:  # no such actor
        return None


def replica_pids(deployment: str, app_name: str = APP_NAME) -> list[int]:
    """The processes of the deployment's running replicas (what a fault drill kills)."""
    app = _details().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        raise ConfigError(f"serve app {app_name!r} has no {deployment} deployment")
    replicas = app.deployments[deployment].replicas
    return [int(r.pid) for r in replicas if r.state.value == "RUNNING" and r.pid]


def active_models(app_name: str = APP_NAME) -> ActiveModels:
    """What the app's Recommender is configured to serve (its target `user_config`)."""
    app = _details().applications.get(app_name)
    if app is None or "Recommender" not in app.deployments:
        raise ConfigError(f"serve app {app_name!r} has no Recommender deployment")
    config = app.deployments["Recommender"].deployment_config.user_config
    return ActiveModels.model_validate(config)


def _switched(details: ServeInstanceDetails, app_name: str, targets: dict[str, Any]) -> bool:
    """Every model deployment targets its `user_config` and all its replicas run it; a
    deployment that failed to reconfigure raises with Serve's message."""
    app = details.applications.get(app_name)
    if app is None:
        return False
    for name, user_config in targets.items():
        deployment = app.deployments.get(name)
        if deployment is None or deployment.deployment_config.user_config != user_config:
            return False
        if deployment.status.value in FAILED:
            raise ConfigError(f"deployment {name} failed to switch: {deployment.message}")
        if deployment.status.value != "HEALTHY":
            return False
    return True


def apply_active_models(
    models: ActiveModels, app_name: str = APP_NAME, timeout_s: float = 120.0
) -> None:
    """Set the model deployments' `user_config` for `models` in the live config and wait until
    every replica has reconfigured (Serve marks a deployment HEALTHY again only then)."""
    details = _details()
    live = _live_applications(details)
    app = live.get(app_name)
    if app is None:
        raise ConfigError(
            f"serve app {app_name!r} was not deployed from a config; deploy it with "
            "`pinfeed serve` or `serve run serving/config.yaml`"
        )
    targets = user_configs(models)
    raw = app.model_dump(exclude_unset=True)
    listed = {deployment["name"]: deployment for deployment in raw.get("deployments", [])}
    for name, user_config in targets.items():
        listed[name] = {**listed.get(name, {"name": name}), "user_config": user_config}
    raw["deployments"] = list(listed.values())
    live[app_name] = ServeApplicationSchema.model_validate(raw)
    _apply(details, live)
    deadline = time.monotonic() + timeout_s
    while not _switched(_details(), app_name, targets):
        if time.monotonic() > deadline:
            raise ReloadTimeout(
                f"serve app {app_name!r}: replicas did not switch to run {models.run_id} within "
                f"{timeout_s:.0f} s; `/healthz` and the Serve logs say where they are"
            )
        time.sleep(POLL_S)
