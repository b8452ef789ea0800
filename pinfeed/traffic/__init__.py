"""Served traffic as data: what serving answered (`served`), what clients told it (`feedback_log`),
and the job that turns both into event-set partitions (`ingest`), so every offline job learns
from served traffic (design §5, the loop)."""
