"""A small HTTP client for the serving API (the `pinfeed run` demo, the tests, users' scripts):
standard library only, so it runs anywhere the app's port is reachable."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from pinfeed.errors import ConfigError


def post_json(
    url: str, body: dict[str, Any], timeout_s: float = 30.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST `body` as JSON; the decoded JSON answer (raises HTTPError on a non-2xx status)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def get_json(url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        return json.loads(answer.read())


def wait_healthy(base_url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll GET /healthz until it answers 200; its body."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return get_json(f"{base_url}/healthz", timeout_s=5)
        except OSError:
            if time.monotonic() > deadline:
                raise ConfigError(f"{base_url}/healthz did not answer in {timeout_s} s") from None
            time.sleep(0.5)
