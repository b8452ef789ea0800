"""The two record types serving writes about its traffic, and the feedback kinds.

`ServedItem`: one per pin of every `/recommend` answer, written by the Recommender (the
served log, `pinfeed.traffic.served`). `FeedbackRecord`: one per acknowledged `/feedback`
event (`pinfeed.traffic.feedback_log`). Timestamps are ISO-8601 UTC strings: both are stored
as JSON and read back by the ingestion job.
"""

from __future__ import annotations

from dataclasses import dataclass

from pinfeed.schema import CONVERSION_KINDS, ENGAGEMENTS

IMPRESSION = "impression"
HIDE = "hide"
"""Negative feedback: the user hid the pin (counts against its cluster's reward)."""
FEEDBACK_KINDS = (IMPRESSION, *ENGAGEMENTS, HIDE, *CONVERSION_KINDS)
REWARD_KINDS = (IMPRESSION, *ENGAGEMENTS, HIDE)
"""Kinds that move a cluster's reward; conversions become events but earn no reward."""


@dataclass(frozen=True)
class FeedbackRecord:
    """One acknowledged event; `dwell_s` only on click / long_click (seconds off-site).
    `event_ts` is ISO 8601 UTC; "" only on the way in, until the feedback sink stamps it."""

    event_id: str
    request_id: int
    pin_id: int
    kind: str
    event_ts: str
    user_id: int | None
    dwell_s: float | None = None


@dataclass(frozen=True)
class ServedItem:
    """One pin of one answer and where it came from (cluster_id / query_pin_id None: not from
    a cluster, e.g. popular or context candidates)."""

    request_id: int
    user_id: int
    served_at: str
    pin_id: int
    position: int
    cluster_id: int | None
    query_pin_id: int | None
    run_id: str
    model_version: str
    """`<run version>+<utility weights version>`: which models and weights scored it."""
    probabilities: tuple[float, ...]
    """Calibrated head probabilities, `pinfeed.schema.ENGAGEMENTS` order."""
    utility: float
