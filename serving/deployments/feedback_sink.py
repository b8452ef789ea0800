"""The FeedbackSink deployment: one replica hosting the `FeedbackRecorder` (the realtime reward
writer serialises updates per process, so one process applies them all)."""

from __future__ import annotations

import os

from ray import serve

from serving.config import ServingConfig
from serving.stages.feedback import FeedbackRecorder, ServedRow
from serving.stages.feedback_log import FeedbackRecord


@serve.deployment(num_replicas=1, max_ongoing_requests=64)
class FeedbackSink:
    def __init__(self, config: ServingConfig) -> None:
        self.recorder = FeedbackRecorder(config)

    def remember(self, rows: list[ServedRow]) -> None:
        """Called by the ingress for every answered request (items and their sources)."""
        self.recorder.remember(rows)

    def record(self, records: list[FeedbackRecord]) -> tuple[list[str], bool]:
        """Durably append, then apply; returns (event ids, applied)."""
        return self.recorder.record(records)

    def recorded(self) -> list[FeedbackRecord]:
        """Everything in the log (tests and operators: what was acknowledged is here)."""
        return self.recorder.log.read_all()

    def pid(self) -> int:
        """This replica's process id (the fault-injection tests kill it)."""
        return os.getpid()
