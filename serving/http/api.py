"""The HTTP contract: request and response models of the ingress (OpenAPI at /docs).

Every model forbids unknown fields and bounds every id to int64, so bad input is a 422 whose
body names the field (`detail[].loc`), never a 500 further down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pinfeed.artifacts.layout import RUN_ID_PATTERN
from pinfeed.utility import UtilityWeights

INT64_MAX = 2**63 - 1
MAX_K = 200
MAX_FEEDBACK_BATCH = 1000
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
Id = int
FeedbackKind = Literal[
    "impression", "closeup", "save", "click", "long_click", "hide", "checkout", "add_to_cart"
]
"""`pinfeed.traffic.records.FEEDBACK_KINDS`, spelled out for the OpenAPI schema."""
DWELL_KINDS = ("click", "long_click")
MAX_DWELL_S = 86_400.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _id(description: str) -> object:
    return Field(ge=0, le=INT64_MAX, description=description)


class RecommendRequest(_Model):
    user_id: Id = _id("the user the feed is for")
    k: int = Field(ge=1, le=MAX_K, description="number of pins to return")
    context_pin_id: Id | None = Field(
        None, ge=0, le=INT64_MAX, description="a pin being viewed: recommend related pins"
    )
    exclude_seen: bool = Field(True, description="leave out the user's own query pins")


class Probabilities(_Model):
    """Calibrated per-head probabilities on the unsampled impression stream."""

    closeup: float = Field(ge=0, le=1)
    save: float = Field(ge=0, le=1)
    click: float = Field(ge=0, le=1)
    long_click: float = Field(ge=0, le=1)


class Source(_Model):
    """Where a candidate came from: the user's interest cluster and its query pin (null for
    cold-start / degraded popular pins; cluster null for a context-pin request)."""

    cluster_id: int | None
    query_pin_id: int | None


class Item(_Model):
    pin_id: int
    utility: float = Field(description="sum over heads of weight x probability")
    probs: Probabilities
    source: Source


class RecommendResponse(_Model):
    request_id: int
    model_version: str = Field(description="<run_id>:<ranker sha>+<utility weights version>")
    degraded: bool = Field(description="answered without the online store (popular pins)")
    cold_start: bool = Field(description="the user is unknown: popular pins, ranked")
    items: list[Item]


class FeedbackEvent(_Model):
    """One event about one served item, named by (request_id, pin_id)."""

    request_id: Id = _id("request_id of the recommend response")
    pin_id: Id = _id("the served pin")
    kind: FeedbackKind
    event_ts: AwareDatetime | None = Field(None, description="when it happened (default: now)")
    user_id: Id | None = Field(None, ge=0, le=INT64_MAX)
    dwell_s: float | None = Field(
        None,
        ge=0,
        le=MAX_DWELL_S,
        allow_inf_nan=False,
        description="seconds off-site after a click (click / long_click only); becomes the "
        "event's click dwell when served traffic is ingested",
    )

    @model_validator(mode="after")
    def _dwell_on_clicks_only(self) -> FeedbackEvent:
        if self.dwell_s is not None and self.kind not in DWELL_KINDS:
            raise ValueError(f"dwell_s: only {list(DWELL_KINDS)} events carry a dwell")
        return self

    @field_validator("event_ts")
    @classmethod
    def _plausible_time(cls, moment: datetime | None) -> datetime | None:
        """Between 2000 and one day from now: pandas and the reward writer need ns timestamps,
        and feedback from the future is a client clock or a forgery."""
        if moment is None:
            return None
        if moment < EARLIEST or moment > datetime.now(UTC) + FUTURE_SLACK:
            raise ValueError("must lie between 2000-01-01 and one day from now (UTC)")
        return moment


class FeedbackBatch(_Model):
    events: list[FeedbackEvent] = Field(min_length=1, max_length=MAX_FEEDBACK_BATCH)


class FeedbackAccepted(_Model):
    accepted: int
    event_ids: list[str] = Field(description="ids under which the events were recorded")
    applied: bool = Field(
        description="the realtime rewards were updated for the events that matched a served "
        "item (false: nothing matched, or the store failed and the offline job will count them)"
    )
    unmatched: int = Field(
        0, description="events naming no served (request_id, pin_id): recorded, credit nothing"
    )


class ReloadRequest(_Model):
    """Switch every replica: `run_id` alone serves that run with its own utility.json;
    `utility` alone keeps the run and changes the weights; both do both."""

    utility: UtilityWeights | None = Field(None, description="new utility weights")
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN, description="artifacts/<run_id>")

    @model_validator(mode="after")
    def _something(self) -> ReloadRequest:
        if self.utility is None and self.run_id is None:
            raise ValueError("give utility, run_id or both")
        return self


class ReloadResponse(_Model):
    model_version: str


class Health(_Model):
    status: Literal["ok", "degraded"] = Field(
        description="degraded: answers come without the online store (see store_problem)"
    )
    store_problem: str | None = Field(
        None, description="why the online store cannot serve (empty views and the fix)"
    )
    replica: str = Field(
        description="the Recommender replica that answered, as Serve's status names it: "
        "a rollout or a node drain can be followed replica by replica"
    )
    model_version: str = Field(description="what the answering replica serves")
    reload_error: str | None = Field(
        None, description="why the last switch failed on that replica (it kept the old run)"
    )
    served_at: datetime
