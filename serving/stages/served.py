"""Recording answers: every pin of every `/recommend` answer goes to the served log
(`pinfeed.traffic.served`) without putting a write on the request's latency path.

The Recommender hands an answer's items to `ServedRecorder.offer`, which only puts them on a
bounded in-memory queue; one writer thread drains the queue and appends whatever has gathered
in one durable batch (one SQLite commit, or one Redis pipeline). Under load batches grow, so
the writes keep up with far more requests than one commit per request would.

The overload rule (the only way an answer goes unrecorded): when `capacity` items are already
waiting (the log is slower than traffic, or its store is down), `offer` drops the answer's
items and counts them in `dropped`; the answer itself is served. A batch failing on a store error is
retried until it lands, holding the queue, so a store outage turns into drops (counted), not into
lost records that were accepted; any other failure counts the batch as dropped. Queued records
live in memory: a process killed while the store is slow or down loses what is queued (up to
`capacity` items), counted nowhere (see docs/serving.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime

from pinfeed.traffic.records import ServedItem
from pinfeed.traffic.served import TRAFFIC_STORE_ERRORS, ServedLog
from serving.stages.pipeline import Recommendation
from serving.stages.selector import NO_CLUSTER

logger = logging.getLogger(__name__)
RETRY_S = 0.5


def served_items(result: Recommendation, served_at: datetime | None = None) -> list[ServedItem]:
    """The items of one answer as the served log records them."""
    moment = (served_at or datetime.now(UTC)).isoformat()
    return [
        ServedItem(
            request_id=result.request_id,
            user_id=result.user_id,
            served_at=moment,
            pin_id=int(pin),
            position=position,
            cluster_id=None if cluster == NO_CLUSTER else int(cluster),
            query_pin_id=None if query == NO_CLUSTER else int(query),
            run_id=result.run_id,
            model_version=result.model_version,
            probabilities=tuple(float(p) for p in probs),  # ENGAGEMENTS order
            utility=float(utility),
        )
        for position, (pin, cluster, query, probs, utility) in enumerate(
            zip(
                result.pin_ids,
                result.cluster_ids,
                result.query_pin_ids,
                result.probabilities,
                result.utility,
                strict=True,
            )
        )
    ]


class ServedRecorder:
    """A bounded queue in front of a served log, drained by one writer thread."""

    def __init__(self, log: ServedLog, capacity: int) -> None:
        self.log = log
        self.capacity = capacity
        self.dropped = 0
        self.recorded = 0
        self._waiting = 0
        self._queue: queue.SimpleQueue[list[ServedItem] | None] = queue.SimpleQueue()
        self._count = threading.Lock()
        self._idle = threading.Condition(self._count)
        self._writer = threading.Thread(target=self._drain, name="served-log", daemon=True)
        self._writer.start()

    def offer(self, items: list[ServedItem]) -> bool:
        """Queue `items` for the log; False (and counted) when the queue is full."""
        with self._count:
            if self._waiting + len(items) > self.capacity:
                self.dropped += len(items)
                return False
            self._waiting += len(items)
        self._queue.put(items)
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything offered so far is in the log; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting == 0, timeout=timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10.0)
        self.log.close()

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = list(first)
            stop = False
            while not self._queue.empty():
                more = self._queue.get()
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            self._append(batch)
            if stop:
                return

    def _append(self, batch: list[ServedItem]) -> None:
        landed = False
        while True:
            try:
                self.log.append(batch)
                landed = True
                break
            except TRAFFIC_STORE_ERRORS as error:  # keep the batch, retry until it lands
                logger.warning("served log append failed, retrying: %s", error)
                time.sleep(RETRY_S)
            except Exception:  # a bug, not an outage: count the batch lost, keep the thread
                logger.exception("served log append failed; %d items not recorded", len(batch))
                break
        with self._idle:
            self._waiting -= len(batch)
            if landed:
                self.recorded += len(batch)
            else:
                self.dropped += len(batch)
            self._idle.notify_all()
