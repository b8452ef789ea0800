"""Feedback: record events durably, then credit them to the clusters that produced the items.

Order of a `/feedback` call: append to the log (`pinfeed.traffic.feedback_log`; durable on
return) -> look the items up in the served log (`pinfeed.traffic.served`, written by the
Recommender replicas) -> credit the matched events to their clusters
(`feature_repo.realtime_rewards`, pushed to the online store) -> 202. A failed push (online
store down) does not undo the ack: the event stays in the log for the next offline reward job,
and `applied` is false.

Attribution lives in the served log and credit in the shared ledger (`pinfeed.traffic.credit`),
not in this process, so feedback after a restart, or on another FeedbackSink replica, is
credited exactly once; events stamped (`event_ts`) before this process started are left to the
offline job, and the answer says `applied: false`. An event without a client `event_ts` is
stamped here, when this process takes it, not by the ingress: a sink replica that starts
after the ingress took a request (as at deploy, under load) would otherwise find the stamp
older than its start and leave a new event uncredited. An event naming no served item is recorded (it is still an acknowledged
event) but credits nothing; the answer says how many (`unmatched`). The served record of an
answer may still be in its Recommender's write queue when a fast client sends feedback, so an
unmatched item is looked up again for up to `unmatched_wait_s` first.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pandas as pd

from feature_repo.pipeline.config import FeatureConfig
from feature_repo.realtime_rewards import RealtimeRewardWriter
from pinfeed.attribution import SERVED_COLUMNS, ItemKey
from pinfeed.errors import PinfeedError, UnavailableError
from pinfeed.traffic.credit import open_credit_ledger
from pinfeed.traffic.feedback_log import FeedbackLog, open_feedback_log
from pinfeed.traffic.records import FeedbackRecord, ServedItem
from pinfeed.traffic.served import ServedLog, open_served_log
from serving.config import ServingConfig
from serving.stages.online import STORE_ERRORS, connect

logger = logging.getLogger(__name__)
FEEDBACK_LOG = "feedback.log"
LOOKUP_RETRY_S = 0.05


@dataclass(frozen=True)
class FeedbackOutcome:
    """What `/feedback` answers: the recorded ids, whether the matched events were credited
    (False when the online store failed, or nothing matched), and how many events named no
    served item."""

    event_ids: list[str]
    applied: bool
    unmatched: int


def served_frame(items: list[ServedItem]) -> pd.DataFrame:
    """`pinfeed.attribution.SERVED_COLUMNS` rows for served items (no cluster: -1)."""
    frame = pd.DataFrame(
        [
            (
                i.request_id,
                i.pin_id,
                i.user_id,
                -1 if i.cluster_id is None else i.cluster_id,
                -1 if i.query_pin_id is None else i.query_pin_id,
                i.served_at,
            )
            for i in items
        ],
        columns=list(SERVED_COLUMNS),
    )
    frame["served_ts"] = pd.to_datetime(frame["served_ts"], utc=True, format="ISO8601")
    return frame


class FeedbackRecorder:
    """The durable log, the served log, and the realtime reward writer of one process."""

    def __init__(self, config: ServingConfig) -> None:
        store = connect(config.project, config.store_url, config.store_timeout_s)
        self.log: FeedbackLog = open_feedback_log(
            config.state / FEEDBACK_LOG, config.store_url, store.project
        )
        self.served: ServedLog = open_served_log(
            config.state, config.store_url, store.project, config.attribution_ttl_s
        )
        self.wait_s = config.unmatched_wait_s
        self.unmatched = 0
        self._count = threading.Lock()  # Serve runs `record` on a thread pool
        self.writer = RealtimeRewardWriter(
            store,
            counted_until=datetime.now(UTC),
            ledger=open_credit_ledger(
                config.state, config.store_url, store.project, config.attribution_ttl_s
            ),
            config=FeatureConfig(),
            window=timedelta(seconds=config.reward_window_s),
        )

    def record(self, records: list[FeedbackRecord]) -> FeedbackOutcome:
        """Durably append, then credit what matches a served item. `UnavailableError` when
        the log did not take them: nothing was acknowledged, the client retries."""
        now = datetime.now(UTC).isoformat()
        records = [r if r.event_ts else replace(r, event_ts=now) for r in records]
        try:
            recorded = self.log.append(records)
        except STORE_ERRORS as error:
            logger.warning("feedback not recorded: %s", error)
            raise UnavailableError(
                "feedback not recorded: the feedback log did not answer"
            ) from error
        keys = [(r.request_id, r.pin_id) for r in recorded]
        try:
            found = self._lookup(keys)
        except STORE_ERRORS as error:  # recorded all the same: the offline job counts them
            logger.warning("feedback recorded but not attributed: %s", error)
            return FeedbackOutcome([r.event_id for r in recorded], False, 0)
        unmatched = sum(key not in found for key in keys)
        with self._count:
            self.unmatched += unmatched
        matched = [r for r in recorded if (r.request_id, r.pin_id) in found]
        applied = bool(matched) and self._apply(matched, list(found.values()))
        return FeedbackOutcome([r.event_id for r in recorded], applied, unmatched)

    def _lookup(self, keys: list[ItemKey]) -> dict[ItemKey, ServedItem]:
        found = self.served.lookup(keys)
        deadline = time.monotonic() + self.wait_s
        while len(found) < len(set(keys)) and time.monotonic() < deadline:
            time.sleep(LOOKUP_RETRY_S)
            found |= self.served.lookup([k for k in keys if k not in found])
        return found

    def _apply(self, records: list[FeedbackRecord], items: list[ServedItem]) -> bool:
        """Credit the matched events; False when the store failed or when some were stamped
        before this process started (`counted_until`: left to the offline job)."""
        events = pd.DataFrame(
            {
                "request_id": [r.request_id for r in records],
                "pin_id": [r.pin_id for r in records],
                "kind": [r.kind for r in records],
                "event_ts": pd.to_datetime(
                    [r.event_ts for r in records], utc=True, format="ISO8601"
                ),
            }
        )
        try:
            self.writer.ingest(served_frame(items), events)
        except (PinfeedError, *STORE_ERRORS) as error:
            logger.warning("feedback recorded but rewards not updated: %s", error)
            return False
        return bool((events["event_ts"] >= self.writer.counted_until).all())
