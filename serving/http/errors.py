"""Errors at the HTTP edge, in one body shape: FastAPI's validation shape
`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, so a client always learns which field
was wrong. The project's errors become 404 (something not produced yet) or 409 (refused); a
store that did not answer (`UnavailableError`) or a lost or overloaded replica 503 with
`Retry-After` (retrying helps); a bug (any other exception, in this process or raised inside a
replica) 500 with an error id that is also in the log, and never a traceback or a path
(retrying does not help). Nothing below this module picks a status.

Validation errors are rendered from `loc`, `msg` and `type` only: FastAPI's default handler
echoes the rejected `input`, and an input such as `NaN` (which Python's JSON parser accepts)
cannot be rendered as JSON, which turned a 422 into a 500.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import GetTimeoutError, ObjectLostError, RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pinfeed.errors import DataNotFoundError, PinfeedError, UnavailableError
from serving.deployments.handles import LOST_REPLICA, lost_replica, root_cause

logger = logging.getLogger("ray.serve")
RETRY_AFTER_S = 1
"""`Retry-After` on a 503: replicas come back or drain their queue within seconds."""
MAX_BODY_BYTES = 1 << 20
"""The largest request body read (a full feedback batch of 1,000 events is about 200 KB)."""


class HttpError(Exception):
    """An error with its status and the field it is about (rendered like a 422)."""

    def __init__(
        self,
        status: int,
        field: tuple[str, ...],
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message
        self.headers = headers


def retry_later(message: str) -> HttpError:
    """A 503 the client should retry after `RETRY_AFTER_S`."""
    return HttpError(503, ("service",), message, {"Retry-After": str(RETRY_AFTER_S)})


def internal_error(error: BaseException) -> HttpError:
    """A 500 for a bug: the traceback goes to the log under a fresh error id; the client gets
    the id only."""
    error_id = secrets.token_hex(8)
    logger.error("error %s", error_id, exc_info=(type(error), error, error.__traceback__))
    return HttpError(500, ("service",), f"internal error {error_id}; it is logged under this id")


def error_body(field: tuple[str, ...], message: str) -> dict[str, Any]:
    return {"detail": [{"loc": list(field), "msg": message, "type": "pinfeed_error"}]}


def project_error(error: PinfeedError, field: tuple[str, ...]) -> HttpError:
    """503 + Retry-After for a store that did not answer, 404 for something not produced yet,
    409 for anything else the project refuses."""
    if isinstance(error, UnavailableError):
        return retry_later(str(error))
    status = 404 if isinstance(error, DataNotFoundError) else 409
    return HttpError(status, field, str(error))


def validation_body(errors: Any) -> dict[str, Any]:
    """FastAPI's validation errors without the echoed input (see the module docstring)."""
    return {
        "detail": [
            {
                "loc": [str(part) for part in problem.get("loc", ())] or ["body"],
                "msg": str(problem.get("msg", "invalid")),
                "type": str(problem.get("type", "value_error")),
            }
            for problem in errors
        ]
    }


def install_error_handlers(api: FastAPI) -> None:
    api.add_middleware(EdgeGuard, max_bytes=MAX_BODY_BYTES)

    @api.exception_handler(HttpError)
    async def _http_error(_: Request, error: HttpError) -> JSONResponse:
        return JSONResponse(
            error_body(error.field, error.message), status_code=error.status, headers=error.headers
        )

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(error.errors()), status_code=422)

    @api.exception_handler(PinfeedError)
    async def _project_error(_: Request, error: PinfeedError) -> JSONResponse:
        """A project error a route did not map itself: its status, never a 500."""
        mapped = project_error(error, ("service",))
        return JSONResponse(
            error_body(mapped.field, mapped.message),
            status_code=mapped.status,
            headers=mapped.headers,
        )

    @api.exception_handler(StarletteHTTPException)
    async def _framework_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        """Framework errors (unparsable body, unknown route, wrong method) in the same shape."""
        field = ("body",) if error.status_code in (400, 413, 415) else ("path",)
        return JSONResponse(
            error_body(field, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )


TRANSIENT = (BackPressureError, *LOST_REPLICA, GetTimeoutError, ObjectLostError)
"""Errors a retry can cure: a replica lost, starting or at capacity. They may arrive wrapped in
a RayTaskError (a replica's own handle call failed), which is still an instance of each."""
RESEND_DELAYS_S = (0.05, 0.5)
"""`call_idempotent`'s waits before its second and third attempts."""


async def call(response: Any, field: tuple[str, ...]) -> Any:
    """Await a handle call: the project's errors -> 4xx; a lost, unavailable or overloaded
    replica -> 503 with `Retry-After`; a bug the replica raised -> 500 (`internal_error`)."""
    try:
        return await response
    except (PinfeedError, RayError, RayServeException) as error:
        raise http_error(error, field) from error


async def call_idempotent(
    send: Callable[[], Awaitable[Any]],
    field: tuple[str, ...],
    delays_s: tuple[float, ...] = RESEND_DELAYS_S,
) -> Any:
    """`call` for a request that is safe to send twice: where a replica on the way was lost
    (`serving.deployments.handles`), `send()` again after each delay of `delays_s`, so a
    SIGKILLed replica costs its in-flight requests a little time instead of an error. Anything
    else (and a replica lost on every attempt) is answered as `call` answers it."""
    for delay in delays_s:
        try:
            return await send()
        except (PinfeedError, RayError, RayServeException) as error:
            if not lost_replica(error):
                raise http_error(error, field) from error
            logger.warning("a serving replica was lost; sending again: %s", root_cause(error))
        await asyncio.sleep(delay)
    return await call(send(), field)


def http_error(error: BaseException, field: tuple[str, ...]) -> HttpError:
    """The answer to a failed handle call (`root_cause` says what the replica raised)."""
    cause = root_cause(error)
    if isinstance(cause, PinfeedError):
        return project_error(cause, field)
    if isinstance(cause, BackPressureError):
        return retry_later("the service is at capacity; retry")
    if isinstance(cause, TRANSIENT):
        logger.warning("a serving replica failed: %s", cause)
        return retry_later("a serving replica failed; retry")
    if isinstance(error, RayTaskError):  # the replica ran the call and raised: a bug
        return internal_error(error)
    logger.warning("a serving call failed: %s", error)
    return retry_later("a serving call failed; retry")


class EdgeGuard:
    """ASGI middleware around the routes: a body over `max_bytes` is a 413 naming the body
    (checked on the declared `Content-Length` before reading and on the bytes received, for
    chunked bodies); an exception nothing mapped is a 500 with an error id (`internal_error`),
    answered here rather than by Starlette's last-resort handler, which re-raises into Serve."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.too_large = f"the request body is over {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if not declared.isdigit():
            problem = HttpError(400, ("header", "content-length"), "not a number of bytes")
            await self._answer(scope, receive, send, problem)
            return
        if int(declared) > self.max_bytes:
            await self._answer(scope, receive, send, HttpError(413, ("body",), self.too_large))
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.too_large)  # FastAPI re-raises HTTPExceptions
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception as error:
            if started:
                raise
            await self._answer(scope, receive, send, internal_error(error))

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, error: HttpError) -> None:
        body = error_body(error.field, error.message)
        await JSONResponse(body, status_code=error.status)(scope, receive, send)
