"""The Ingress deployment: FastAPI routes, validation, request ids, errors -> status codes.

Routes: POST /recommend, POST /feedback (202 once durably recorded), POST /admin/reload (token
from the environment, sent as `x-admin-token`; switches every replica through the model
deployments' `user_config`), GET /healthz; OpenAPI at /docs and /openapi.json. Every error body
has one shape (`serving.http.errors`), so a client always learns which field was wrong.

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
from typing import Annotated

from fastapi import FastAPI, Header
from ray import serve
from ray.exceptions import RayError
from ray.serve.deployment import Deployment
from ray.serve.handle import DeploymentHandle

from pinfeed.errors import PinfeedError
from pinfeed.schema import ENGAGEMENTS
from pinfeed.traffic.records import FeedbackRecord
from serving.config import ActiveModels
from serving.deploy import ReloadTimeout, active_models, apply_active_models, token_digest
from serving.http.api import (
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
from serving.http.errors import HttpError, call, call_idempotent, install_error_handlers
from serving.stages.pipeline import Recommendation, RecommendQuery
from serving.stages.selector import NO_CLUSTER

logger = logging.getLogger("ray.serve")
RequestId = Annotated[
    str | None,
    Header(max_length=128, description="request id: digits are used as is, else hashed"),
]
AdminToken = Annotated[str | None, Header(description="the value of $PINFEED_ADMIN_TOKEN")]


def request_id_of(header: str | None) -> int:
    """The int64 request id for an `x-request-id` header value (see the module docstring)."""
    if header is None:
        return secrets.randbits(63)
    if header.isascii() and header.isdigit() and int(header) <= INT64_MAX:
        return int(header)
    digest = hashlib.blake2b(header.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & INT64_MAX


def to_response(result: Recommendation) -> RecommendResponse:
    heads = ENGAGEMENTS
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


def reload_target(
    current: ActiveModels, body: ReloadRequest, run_id: str | None, requested_at: datetime
) -> ActiveModels:
    """What to serve after a reload (`ReloadRequest` says how a partial body is read);
    `run_id` is the body's run resolved to a concrete id."""
    if run_id is not None:
        return ActiveModels(run_id=run_id, utility=body.utility, requested_at=requested_at)
    return ActiveModels(run_id=current.run_id, utility=body.utility, requested_at=requested_at)


def ingress_deployment() -> Deployment:
    """Build the FastAPI app and its Ingress deployment class (not at import time)."""
    api = FastAPI(title="pinfeed", version="1", description="Pin recommendations (design §5)")
    install_error_handlers(api)

    @serve.deployment(max_ongoing_requests=64)
    @serve.ingress(api)
    class Ingress:
        def __init__(
            self,
            recommender: DeploymentHandle,
            feedback: DeploymentHandle,
            admin_digest: str | None,
        ) -> None:
            self.recommender = recommender
            self.feedback = feedback
            self.admin_digest = admin_digest
            self.app_name = serve.get_replica_context().app_name
            self.reloading = asyncio.Lock()

        @api.post("/recommend", response_model=RecommendResponse)
        async def recommend(
            self, body: RecommendRequest, x_request_id: RequestId = None
        ) -> RecommendResponse:
            request_id = request_id_of(x_request_id)
            query = RecommendQuery(
                request_id, body.user_id, body.k, body.context_pin_id, body.exclude_seen
            )
            # a resend draws the same queries (the request id seeds them), so a lost replica's
            # request is sent again; the served log keeps the first rows per request and pin
            result = await call_idempotent(
                lambda: self.recommender.recommend.remote(query), ("service",)
            )
            return to_response(result)

        @api.post("/feedback", status_code=202, response_model=FeedbackAccepted)
        async def feedback(self, body: FeedbackEvent | FeedbackBatch) -> FeedbackAccepted:
            events = body.events if isinstance(body, FeedbackBatch) else [body]
            records = [
                FeedbackRecord(
                    event_id="",
                    request_id=e.request_id,
                    pin_id=e.pin_id,
                    kind=e.kind,
                    # no client time: the FeedbackSink stamps the event when it takes it
                    # (its credit rule compares stamps with its own start)
                    event_ts=e.event_ts.astimezone(UTC).isoformat() if e.event_ts else "",
                    user_id=e.user_id,
                    dwell_s=e.dwell_s,
                )
                for e in events
            ]
            outcome = await call(self.feedback.record.remote(records), ("body",))
            return FeedbackAccepted(
                accepted=len(outcome.event_ids),
                event_ids=outcome.event_ids,
                applied=outcome.applied,
                unmatched=outcome.unmatched,
            )

        @api.post("/admin/reload", response_model=ReloadResponse)
        async def reload(
            self, body: ReloadRequest, x_admin_token: AdminToken = None
        ) -> ReloadResponse:
            """Check the new run on one replica, set the model deployments' user_config, and
            answer once every replica serves it; a switch that fails is rolled back (409)."""
            self._authorise(x_admin_token)
            async with self.reloading:  # one reload at a time: each reads, then writes, the config
                current = await asyncio.to_thread(active_models, self.app_name)
                run_id = None
                if body.run_id is not None:
                    checked = await call(
                        self.recommender.check_run.remote(body.run_id), ("body", "run_id")
                    )
                    run_id = checked["run_id"]
                target = reload_target(current, body, run_id, datetime.now(UTC))
                await self._switch(target)
                status = await call(self.recommender.status.remote(), ("service",))
                if status["error"] or status["run_id"] != target.run_id:
                    await self._switch(current)
                    raise HttpError(
                        409, ("body",), f"switch failed and was rolled back: {status['error']}"
                    )
                return ReloadResponse(model_version=status["model_version"])

        async def _switch(self, models: ActiveModels) -> None:
            try:
                await asyncio.to_thread(apply_active_models, models, self.app_name)
            except ReloadTimeout as error:
                raise HttpError(504, ("service",), str(error)) from error
            except PinfeedError as error:
                raise HttpError(409, ("service",), str(error)) from error
            except RayError as error:
                raise HttpError(
                    503, ("service",), "the Serve controller did not answer; retry"
                ) from error

        @api.get("/healthz", response_model=Health)
        async def healthz(self) -> Health:
            status = await call(self.recommender.status.remote(), ("service",))
            problem = status["store_problem"]
            return Health(
                status="degraded" if problem else "ok",
                store_problem=problem,
                replica=status["replica"],
                model_version=status["model_version"],
                reload_error=status["error"],
                served_at=datetime.now(UTC),
            )

        def _authorise(self, token: str | None) -> None:
            authorise(self.admin_digest, token)

    return Ingress


def authorise(admin_digest: str | None, token: str | None) -> None:
    """An admin call goes ahead only with the token whose SHA-256 the app was deployed with:
    403 when it was deployed without one (admin disabled), 401 for a missing or wrong token."""
    field = ("header", "x-admin-token")
    if admin_digest is None:
        raise HttpError(403, field, "admin is disabled: set PINFEED_ADMIN_TOKEN and redeploy")
    if token is None or not hmac.compare_digest(token_digest(token) or "", admin_digest):
        raise HttpError(401, field, "missing or wrong admin token")
