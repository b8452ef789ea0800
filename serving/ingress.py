"""The Ingress deployment: FastAPI routes, validation, request ids, errors -> status codes.

Routes: POST /recommend, POST /feedback (202 once durably recorded), POST /admin/reload (token
from the environment, sent as `x-admin-token`), GET /healthz; OpenAPI at /docs and
/openapi.json. Every error body has FastAPI's validation shape, `{"detail": [{"loc": [...],
"msg": ...}]}`, so a client always learns which field was wrong.

Request ids are int64 (the event schema's type), taken from the `x-request-id` header: digits
are used as they are (a client replaying a request id replays its query draws), anything else
(the UUID Serve's proxy assigns when the client sends none) is hashed to 63 bits.

No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime,
and Serve's ingress wrapper resolves them outside this module's globals.
"""

import asyncio
import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayError
from ray.serve.deployment import Deployment
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pinfeed.errors import DataNotFoundError, PinfeedError
from serving.api import (
    INT64_MAX,
    FeedbackAccepted,
    FeedbackBatch,
    FeedbackEvent,
    Health,
    Item,
    Probabilities,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    Source,
)
from serving.config import ServingConfig
from serving.feedback_log import FeedbackRecord
from serving.pipeline import Recommendation, RecommendQuery
from serving.selector import NO_CLUSTER
from serving.state import ServingState

logger = logging.getLogger("ray.serve")
RequestId = Annotated[
    str | None,
    Header(max_length=128, description="request id: digits are used as is, else hashed"),
]
AdminToken = Annotated[str | None, Header(description="the value of $PINFEED_ADMIN_TOKEN")]


class HttpError(Exception):
    """An error with its status and the field it is about (rendered like a 422)."""

    def __init__(self, status: int, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def error_body(field: tuple[str, ...], message: str) -> dict[str, Any]:
    return {"detail": [{"loc": list(field), "msg": message, "type": "pinfeed_error"}]}


def request_id_of(header: str | None) -> int:
    """The int64 request id for an `x-request-id` header value (see the module docstring)."""
    if header is None:
        return secrets.randbits(63)
    if header.isascii() and header.isdigit() and int(header) <= INT64_MAX:
        return int(header)
    digest = hashlib.blake2b(header.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & INT64_MAX


def token_digest(token: str | None) -> str | None:
    """SHA-256 of the admin token: replicas get the digest, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def to_response(result: Recommendation) -> RecommendResponse:
    heads = ("closeup", "save", "click", "long_click")
    items = [
        Item(
            pin_id=int(pin),
            utility=float(utility),
            probs=Probabilities(
                **{h: float(min(max(p, 0.0), 1.0)) for h, p in zip(heads, probs, strict=True)}
            ),
            source=Source(
                cluster_id=None if cluster == NO_CLUSTER else int(cluster),
                query_pin_id=None if query == NO_CLUSTER else int(query),
            ),
        )
        for pin, utility, probs, cluster, query in zip(
            result.pin_ids,
            result.utility,
            result.probabilities,
            result.cluster_ids,
            result.query_pin_ids,
            strict=True,
        )
    ]
    return RecommendResponse(
        request_id=result.request_id,
        model_version=result.model_version,
        degraded=result.degraded,
        cold_start=result.cold_start,
        items=items,
    )


def served_rows(result: Recommendation) -> list[tuple[int, int, int, int, int, datetime]]:
    now = datetime.now(UTC)
    return [
        (result.request_id, int(pin), result.user_id, int(cluster), int(query), now)
        for pin, cluster, query in zip(
            result.pin_ids, result.cluster_ids, result.query_pin_ids, strict=True
        )
    ]


def _install_errors(api: FastAPI) -> None:
    @api.exception_handler(HttpError)
    async def _http_error(_: Request, error: HttpError) -> JSONResponse:
        return JSONResponse(error_body(error.field, error.message), status_code=error.status)

    @api.exception_handler(StarletteHTTPException)
    async def _framework_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        """Framework errors (unparsable body, unknown route, wrong method) in the same shape."""
        field = ("body",) if error.status_code in (400, 413, 415) else ("path",)
        return JSONResponse(
            error_body(field, str(error.detail)),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )


def ingress_deployment() -> Deployment:
    """Build the FastAPI app and its Ingress deployment class (not at import time)."""
    api = FastAPI(title="pinfeed", version="1", description="Pin recommendations (design §5)")
    _install_errors(api)

    @serve.deployment(max_ongoing_requests=64)
    @serve.ingress(api)
    class Ingress:
        def __init__(
            self,
            config: ServingConfig,
            recommender: DeploymentHandle,
            feedback: DeploymentHandle,
            admin_digest: str | None,
        ) -> None:
            self.recommender = recommender
            self.feedback = feedback
            self.admin_digest = admin_digest
            self.state = ServingState(config.state)
            self.background: set[asyncio.Task[None]] = set()

        @api.post("/recommend", response_model=RecommendResponse)
        async def recommend(
            self, body: RecommendRequest, x_request_id: RequestId = None
        ) -> RecommendResponse:
            request_id = request_id_of(x_request_id)
            query = RecommendQuery(
                request_id, body.user_id, body.k, body.context_pin_id, body.exclude_seen
            )
            result = await _call(self.recommender.recommend.remote(query), ("service",))
            self._remember(served_rows(result))
            return to_response(result)

        @api.post("/feedback", status_code=202, response_model=FeedbackAccepted)
        async def feedback(self, body: FeedbackEvent | FeedbackBatch) -> FeedbackAccepted:
            events = body.events if isinstance(body, FeedbackBatch) else [body]
            now = datetime.now(UTC)
            records = [
                FeedbackRecord(
                    event_id="",
                    request_id=e.request_id,
                    pin_id=e.pin_id,
                    kind=e.kind,
                    event_ts=(e.event_ts or now).astimezone(UTC).isoformat(),
                    user_id=e.user_id,
                )
                for e in events
            ]
            ids, applied = await _call(self.feedback.record.remote(records), ("body",))
            return FeedbackAccepted(accepted=len(ids), event_ids=ids, applied=applied)

        @api.post("/admin/reload", response_model=ReloadResponse)
        async def reload(
            self, body: ReloadRequest, x_admin_token: AdminToken = None
        ) -> ReloadResponse:
            self._authorise(x_admin_token)
            if body.run_id is not None:
                await _call(self.recommender.check_run.remote(body.run_id), ("body", "run_id"))
                self.state.set_active_run(body.run_id)
            if body.utility is not None:
                self.state.set_weights(body.utility)
            version = await _call(self.recommender.model_version.remote(), ("service",))
            return ReloadResponse(model_version=version)

        @api.get("/healthz", response_model=Health)
        async def healthz(self) -> Health:
            version = await _call(self.recommender.model_version.remote(), ("service",))
            return Health(status="ok", model_version=version, served_at=datetime.now(UTC))

        def _authorise(self, token: str | None) -> None:
            field = ("header", "x-admin-token")
            if self.admin_digest is None:
                raise HttpError(
                    403, field, "admin is disabled: set PINFEED_ADMIN_TOKEN and redeploy"
                )
            if token is None or not hmac.compare_digest(
                token_digest(token) or "", self.admin_digest
            ):
                raise HttpError(401, field, "missing or wrong admin token")

        def _remember(self, rows: list[tuple[int, int, int, int, int, datetime]]) -> None:
            task = asyncio.create_task(_quietly(self.feedback.remember.remote(rows)))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    return Ingress


async def _call(response: Any, field: tuple[str, ...]) -> Any:
    """Await a handle call, mapping the project's errors to 4xx and lost replicas to 503."""
    try:
        return await response
    except DataNotFoundError as error:
        raise HttpError(404, field, str(error)) from error
    except PinfeedError as error:
        raise HttpError(409, field, str(error)) from error
    except RayError as error:
        raise HttpError(503, ("service",), f"a serving replica failed; retry: {error}") from error


async def _quietly(response: Any) -> None:
    try:
        await response
    except RayError as error:
        logger.warning("served items not recorded for attribution: %s", error)
