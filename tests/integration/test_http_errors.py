"""The HTTP edge's error mapping, on real failures: exceptions raised inside Ray tasks (as a
replica's would arrive through a handle) and a FastAPI app with the edge middleware, driven
through its ASGI interface."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
import ray
from fastapi import FastAPI
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError

from pinfeed.errors import ConfigError, DataNotFoundError, UnavailableError
from serving.http.api import INT64_MAX
from serving.http.errors import HttpError, call, call_idempotent, install_error_handlers
from serving.http.ingress import request_id_of


@ray.remote
def raising(kind: str) -> None:
    errors: dict[str, Exception] = {
        "bug": ValueError("index 7 out of range in /srv/secret/path.py"),
        "missing": DataNotFoundError("run r1 has no ranker"),
        "refused": ConfigError("weights must sum to 1"),
        "overloaded": BackPressureError(num_queued_requests=5, max_queued_requests=5),
    }
    raise errors[kind]


def failed_call(kind: str) -> HttpError:
    async def run() -> None:
        await call(raising.remote(kind), ("body",))

    with pytest.raises(HttpError) as caught:
        asyncio.run(run())
    return caught.value


def test_replica_errors_map_to_statuses(ray_local: None) -> None:
    bug = failed_call("bug")
    assert bug.status == 500 and bug.message.startswith("internal error ")
    assert "/srv" not in bug.message and "Traceback" not in bug.message
    assert (failed_call("missing").status, failed_call("refused").status) == (404, 409)
    overloaded = failed_call("overloaded")
    assert overloaded.status == 503 and overloaded.headers == {"Retry-After": "1"}


@ray.remote(max_restarts=0)
class Replica:
    """Stands for a deployment replica: `die` loses the process, as a killed replica does."""

    def die(self) -> None:
        os._exit(1)

    def ping(self) -> str:
        return "ok"


@ray.remote
def calls_a_lost_replica(replica: Any) -> None:
    """The Recommender calling a Ranker that is gone: its own handle call fails inside it."""
    ray.get(replica.ping.remote())


def test_a_lost_replica_is_503_also_behind_another_replica(ray_local: None) -> None:
    """A lost replica (RayActorError) is a 503 + Retry-After, not a 500 bug, also when it
    reaches the edge wrapped in the RayTaskError of the replica that called it."""
    replica = Replica.remote()
    lost = failed_on(replica.die.remote())
    assert lost.status == 503 and lost.headers == {"Retry-After": "1"}, lost.message
    behind = failed_on(calls_a_lost_replica.remote(replica))
    assert behind.status == 503 and behind.headers == {"Retry-After": "1"}, behind.message


def resent(responses: list[Any]) -> tuple[Any, int]:
    """`call_idempotent` over `responses`, one per attempt (no waits): its outcome (the value,
    or the HttpError) and how many it sent."""
    sent = 0

    def send() -> Any:
        nonlocal sent
        sent += 1
        return responses[sent - 1]

    async def run() -> Any:
        return await call_idempotent(send, ("service",), delays_s=(0.0, 0.0))

    try:
        return asyncio.run(run()), sent
    except HttpError as error:
        return error, sent


def test_a_request_safe_to_resend_is_sent_again_only_when_a_replica_was_lost(
    ray_local: None,
) -> None:
    """A lost replica, directly or behind another: sent again, and the next replica's answer is
    the answer. A bug or an overload is answered at once (a bug would fail again; an overloaded
    service needs the client to back off); a replica lost on every attempt is a 503."""
    gone = Replica.remote()
    with pytest.raises(RayActorError):
        ray.get(gone.die.remote())
    lost = [gone.ping.remote(), calls_a_lost_replica.remote(gone)]
    healthy = Replica.remote()
    answer, sent = resent([*lost, healthy.ping.remote()])
    assert (answer, sent) == ("ok", 3)
    bug, sent = resent([raising.remote("bug"), healthy.ping.remote()])
    assert isinstance(bug, HttpError) and bug.status == 500 and sent == 1
    busy, sent = resent([raising.remote("overloaded"), healthy.ping.remote()])
    assert isinstance(busy, HttpError) and busy.status == 503 and sent == 1
    never, sent = resent([calls_a_lost_replica.remote(gone) for _ in range(3)])
    assert isinstance(never, HttpError) and never.status == 503 and sent == 3


def failed_on(response: Any) -> HttpError:
    async def run() -> None:
        await call(response, ("service",))

    with pytest.raises(HttpError) as caught:
        asyncio.run(run())
    return caught.value


def edge_app() -> FastAPI:
    api = FastAPI()
    install_error_handlers(api)

    @api.post("/echo")
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return body

    @api.get("/bug")
    async def bug() -> None:
        raise RuntimeError("failed at /srv/secret/path.py")

    @api.get("/missing")
    async def missing() -> None:
        raise DataNotFoundError("run r1 has no ranker")

    @api.get("/unavailable")
    async def unavailable() -> None:
        raise UnavailableError("the feedback log did not answer")

    return api


def asgi_request(
    api: FastAPI,
    method: str,
    path: str,
    body: bytes = b"",
    chunked: bool = False,
    length: bytes | None = None,
) -> tuple[int, Any]:
    """One request through the app's ASGI interface: (status, decoded JSON body).
    `length`: the Content-Length header to send instead of the body's."""
    headers = [(b"content-type", b"application/json")]
    if not chunked:
        headers.append((b"content-length", length or str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    messages = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(api(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(raw)


def test_edge_answers_bugs_and_oversized_bodies_in_the_error_shape() -> None:
    api = edge_app()
    assert asgi_request(api, "POST", "/echo", b'{"a": 1}') == (200, {"a": 1})
    status, answer = asgi_request(api, "GET", "/bug")
    assert status == 500 and "/srv" not in json.dumps(answer), answer
    assert answer["detail"][0]["msg"].startswith("internal error ")
    big = b'{"a": 1, "pad": "' + b"x" * (2 << 20) + b'"}'
    for chunked in (False, True):
        status, answer = asgi_request(api, "POST", "/echo", big, chunked=chunked)
        assert status == 413 and answer["detail"][0]["loc"] == ["body"], (chunked, answer)
    status, answer = asgi_request(api, "POST", "/echo", b'{"a": NaN}')
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "a"], answer
    status, answer = asgi_request(api, "POST", "/echo", b'{"a": 1}', length=b"eight")
    assert status == 400 and answer["detail"][0]["loc"] == ["header", "content-length"], answer
    # project errors a route raises itself keep their status, never a 500
    status, answer = asgi_request(api, "GET", "/missing")
    assert status == 404 and answer["detail"][0]["msg"] == "run r1 has no ranker", answer
    assert asgi_request(api, "GET", "/unavailable")[0] == 503


def test_request_ids_from_headers_are_int64_digits_as_is_else_hashed() -> None:
    """docs/serving.md: digits are used as is (a replayed id replays its query draws); any other
    value, such as the UUID Serve's proxy adds, is hashed to 63 bits, the same way every time."""
    assert request_id_of("42") == 42 and request_id_of(str(INT64_MAX)) == INT64_MAX
    uuid = "0b5e6a4c-1f2d-4c3b-9a8e-7d6c5b4a3f2e"
    hashed = {request_id_of(value) for value in (uuid, str(INT64_MAX + 1), "４２", "-7")}
    assert len(hashed) == 4 and all(0 <= value <= INT64_MAX for value in hashed)
    assert request_id_of(uuid) == request_id_of(uuid) != request_id_of(uuid.upper())
    drawn = {request_id_of(None) for _ in range(64)}
    assert len(drawn) == 64 and all(0 <= value <= INT64_MAX for value in drawn)
