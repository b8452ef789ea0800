"""The serving app for the tests: deployed declaratively like `serve run` (so reloads are
Serve's lightweight `user_config` updates), every deployment at 0 CPUs (the test Ray has 2, and
the controller and proxy need room), and a plain HTTP caller that returns errors as values."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pinfeed.utility import HeadWeights, UtilityWeights
from serving.client import wait_healthy
from serving.config import (
    DEPLOYMENT_NAMES,
    ActorOptions,
    DeploymentSettings,
    ServeFile,
    ServingConfig,
)
from serving.deploy import deploy
from tests.support.redis import free_port


def zero_cpu_deployments(
    max_ongoing_requests: int = 16, replicas: dict[str, int] | None = None
) -> tuple[DeploymentSettings, ...]:
    zero = ActorOptions(num_cpus=0)
    return tuple(
        DeploymentSettings(
            name=name,
            ray_actor_options=zero,
            max_ongoing_requests=max_ongoing_requests,
            num_replicas=(replicas or {}).get(name, 1),
        )
        for name in DEPLOYMENT_NAMES
    )


def start_app(
    config: ServingConfig,
    replicas: dict[str, int] | None = None,
    deployments: tuple[DeploymentSettings, ...] | None = None,
    request_timeout_s: float = 10.0,
) -> str:
    """Deploy the app with `config` on a free port (Ray must be up); its base URL, healthy.
    `replicas`: deployment name -> replicas (default one each); `deployments`: the settings
    whole instead; `request_timeout_s`: the proxy's deadline (Serve must not be running)."""
    settings = deployments or zero_cpu_deployments(replicas=replicas)
    url = deploy(
        ServeFile(args=config, deployments=settings, request_timeout_s=request_timeout_s),
        host="127.0.0.1",
        port=free_port(),
    )
    wait_healthy(url)
    return url


def call(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST `body` as JSON: (status, decoded body), for 2xx and error answers alike."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def flush_served() -> None:
    """Wait until the (single) Recommender replica's answers are in the served log."""
    from ray import serve

    handle = serve.get_deployment_handle("Recommender", app_name="pinfeed")
    assert handle.flush_served.remote().result(timeout_s=30)


def post_raw(
    url: str, data: bytes, content_type: str = "application/json"
) -> tuple[int, Any, dict[str, str]]:
    """POST raw bytes (malformed bodies): (status, decoded JSON body or None, headers with
    lower-case names)."""
    request = urllib.request.Request(url, data=data, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, raw, headers = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers
    headers = {name.lower(): value for name, value in headers.items()}
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, None, headers


def reload_closeup_only(base_url: str, token: str) -> tuple[int, Any]:
    """`/admin/reload` to utility weights of the closeup head alone (version "closeup-only"):
    (status, decoded body)."""
    closeup_only = UtilityWeights(
        version="closeup-only", weights=HeadWeights(closeup=1, save=0, click=0, long_click=0)
    )
    return call(
        f"{base_url}/admin/reload",
        {"utility": closeup_only.model_dump()},
        {"x-admin-token": token},
    )
