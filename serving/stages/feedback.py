"""Feedback: record events durably, then credit them to the clusters that produced the items.

Order of a `/feedback` call: append to the log (`feedback_log`; durable on return) -> credit
the events to the clusters that produced the items (`feature_repo.realtime_rewards`, pushed to
the online store) -> 202. A failed push (online store down) does not undo the ack: the event
stays in the log for the next offline reward job, and `applied` is false.

Served items (which cluster and query pin produced each pin of each request) are remembered in
memory, the most recent `capacity` of them, since attribution needs them. One recorder per
process: the reward writer serialises read-add-push per user only within one process (see
`feature_repo.realtime_rewards`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta

import pandas as pd

from feature_repo.realtime_rewards import RealtimeRewardWriter
from pinfeed.attribution import SERVED_COLUMNS
from pinfeed.errors import PinfeedError
from serving.config import ServingConfig
from serving.stages.feedback_log import FeedbackLog, FeedbackRecord, open_feedback_log
from serving.stages.online import STORE_ERRORS, connect

logger = logging.getLogger(__name__)
FEEDBACK_LOG = "feedback.log"
ServedRow = tuple[int, int, int, int, int, datetime]
"""(request_id, pin_id, user_id, cluster_id, query_pin_id, served_ts): `SERVED_COLUMNS`."""


class ServedMemory:
    """The last `capacity` served items, by (request_id, pin_id)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: OrderedDict[tuple[int, int], ServedRow] = OrderedDict()

    def add(self, rows: list[ServedRow]) -> None:
        for row in rows:
            self.rows[(row[0], row[1])] = row
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)

    def frame(self, keys: set[tuple[int, int]]) -> pd.DataFrame:
        found = [self.rows[key] for key in keys if key in self.rows]
        frame = pd.DataFrame(found, columns=list(SERVED_COLUMNS))
        frame["served_ts"] = pd.to_datetime(frame["served_ts"], utc=True)
        return frame


class FeedbackRecorder:
    """The durable log, the served-item memory and the realtime reward writer of one process."""

    def __init__(self, config: ServingConfig) -> None:
        self.log: FeedbackLog = open_feedback_log(config.state / FEEDBACK_LOG, config.redis_url)
        self.served = ServedMemory(config.served_memory)
        self.writer = RealtimeRewardWriter(
            connect(config.project, config.redis_url),
            counted_until=datetime.now(UTC),
            window=timedelta(seconds=config.reward_window_s),
        )

    def remember(self, rows: list[ServedRow]) -> None:
        """The items of one answered request and their sources."""
        self.served.add(rows)

    def record(self, records: list[FeedbackRecord]) -> tuple[list[str], bool]:
        """Durably append, then apply; returns (event ids, applied)."""
        recorded = self.log.append(records)
        return [r.event_id for r in recorded], self._apply(recorded)

    def _apply(self, records: list[FeedbackRecord]) -> bool:
        events = pd.DataFrame(
            {
                "request_id": [r.request_id for r in records],
                "pin_id": [r.pin_id for r in records],
                "kind": [r.kind for r in records],
                "event_ts": pd.to_datetime([r.event_ts for r in records], utc=True),
            }
        )
        served = self.served.frame(set(zip(events["request_id"], events["pin_id"], strict=True)))
        if served.empty:
            return True
        try:
            self.writer.ingest(served, events)
        except (PinfeedError, *STORE_ERRORS) as error:
            logger.warning("feedback recorded but rewards not updated: %s", error)
            return False
        return True
