"""The FeedbackSink deployment: hosts a `FeedbackRecorder`. Attribution (the served log) and
credit (the ledger and its lock) live outside the process, so it may run several replicas and
restart without losing or double-counting credit."""

from __future__ import annotations

import os

from ray import serve
from ray.serve.metrics import Counter

from pinfeed.traffic.records import FeedbackRecord
from serving.config import ServingConfig
from serving.stages.feedback import FeedbackOutcome, FeedbackRecorder


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
class FeedbackSink:
    def __init__(self, config: ServingConfig) -> None:
        self.recorder = FeedbackRecorder(config)
        self.unattributed = Counter(
            "pinfeed_feedback_unattributed_total",
            description="Acknowledged feedback events that named no served item.",
        )

    def record(self, records: list[FeedbackRecord]) -> FeedbackOutcome:
        """Durably append, then credit what matches a served item."""
        outcome = self.recorder.record(records)
        if outcome.unmatched:
            self.unattributed.inc(outcome.unmatched)
        return outcome

    def recorded(self) -> list[FeedbackRecord]:
        """Everything in the log (tests and operators: what was acknowledged is here)."""
        return self.recorder.log.read_all()

    def unmatched(self) -> int:
        """Events this replica recorded that named no served item."""
        return self.recorder.unmatched

    def pid(self) -> int:
        """This replica's process id (the fault-injection tests kill it)."""
        return os.getpid()
