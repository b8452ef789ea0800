"""Errors at the HTTP edge, in one body shape: FastAPI's validation shape
`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`, so a client always learns which field
was wrong. The project's errors become 404 (something not produced yet) or 409 (refused), a
lost replica 503; nothing below this module picks a status code.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray.exceptions import RayError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pinfeed.errors import DataNotFoundError, PinfeedError

logger = logging.getLogger("ray.serve")


class HttpError(Exception):
    """An error with its status and the field it is about (rendered like a 422)."""

    def __init__(self, status: int, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_body(field: tuple[str, ...], message: str) -> dict[str, Any]:
    return {"detail": [{"loc": list(field), "msg": message, "type": "pinfeed_error"}]}


def status_of(error: PinfeedError) -> int:
    """404 for something not produced yet, 409 for anything else the project refuses."""
    return 404 if isinstance(error, DataNotFoundError) else 409


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(HttpError)
    async def _http_error(_: Request, error: HttpError) -> JSONResponse:
        return JSONResponse(error_body(error.field, error.message), status_code=error.status)

    @api.exception_handler(PinfeedError)
    async def _project_error(_: Request, error: PinfeedError) -> JSONResponse:
        """A project error a route did not map itself: its status, never a 500."""
        return JSONResponse(error_body(("service",), str(error)), status_code=status_of(error))

    @api.exception_handler(StarletteHTTPException)
    async def _framework_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        """Framework errors (unparsable body, unknown route, wrong method) in the same shape."""
        field = ("body",) if error.status_code in (400, 413, 415) else ("path",)
        return JSONResponse(
            error_body(field, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )


async def call(response: Any, field: tuple[str, ...]) -> Any:
    """Await a handle call, mapping the project's errors to 4xx and lost replicas to 503."""
    try:
        return await response
    except PinfeedError as error:
        raise HttpError(status_of(error), field, str(error)) from error
    except RayError as error:
        logger.warning("a serving replica failed: %s", error)
        raise HttpError(503, ("service",), "a serving replica failed; retry") from error
