"""Durable feedback logs: `/feedback` answers 202 only after `append` returned.

- `LocalFeedbackLog` (default): JSON lines appended with one `write` per batch, then `fsync`, so
  an acknowledged event survives the process being killed (and the machine losing power, as far
  as the disk honours fsync). A torn last line from a crash mid-write is skipped on read.
- `RedisFeedbackLog` (when Redis is configured): `XADD` to a stream in one MULTI/EXEC
  transaction; as durable as the server's persistence settings (AOF `appendfsync everysec` or
  `always` in production; a server run with `--save ""` and no AOF keeps it in memory only).

Both give every event an id (`FeedbackRecord.event_id`) that the 202 returns, so a client can
check that what it was told is recorded is there (`read_all`). Redis keys carry the Feast
project's name (`traffic_key`), so two projects on one server never share a stream. On a Redis
Cluster the project is a hash tag (`{project}`), so a project's streams and lock share a slot;
the per-request keys (served items, credits) are tagged by project and request and spread over
the masters (`request_key`).
"""

from __future__ import annotations

import json
import os
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path

from pinfeed.connection import RedisConnection
from pinfeed.traffic.records import FeedbackRecord


def traffic_key(project: str, name: str, *, cluster: bool = False) -> str:
    """The Redis key of one traffic structure of `project`: `pinfeed:<name>:<project>`, or
    `pinfeed:<name>:{<project>}` on a cluster (one hash slot per project). A single server keeps
    the plain name, so the streams a deployment already holds stay where its readers look."""
    return f"pinfeed:{name}:{{{project}}}" if cluster else f"pinfeed:{name}:{project}"


def request_key(project: str, name: str, request_id: int, *, cluster: bool = False) -> str:
    """The key of one request's entry of a per-request structure (served items, credits):
    `pinfeed:<name>:<project>:<request>`, or `pinfeed:<name>:{<project>:<request>}` on a
    cluster, so the requests spread over every master instead of piling on the project's slot
    (they are the bulk of the traffic data)."""
    if cluster:
        return f"pinfeed:{name}:{{{project}:{request_id}}}"
    return f"{traffic_key(project, name)}:{request_id}"


class FeedbackLog(ABC):
    """Append-only, durable on return."""

    @abstractmethod
    def append(self, records: list[FeedbackRecord]) -> list[FeedbackRecord]:
        """Record `records` durably; return them with their final ids."""

    @abstractmethod
    def read_all(self) -> list[FeedbackRecord]:
        """Every recorded event, in append order."""


class LocalFeedbackLog(FeedbackLog):
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, records: list[FeedbackRecord]) -> list[FeedbackRecord]:
        records = [
            record if record.event_id else _with_id(record, uuid.uuid4().hex) for record in records
        ]
        payload = "".join(json.dumps(asdict(r), separators=(",", ":")) + "\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return records

    def read_all(self) -> list[FeedbackRecord]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(FeedbackRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue  # a torn last line from a crash mid-write
        return records


class RedisFeedbackLog(FeedbackLog):
    def __init__(self, url: str, project: str) -> None:
        self.connection = RedisConnection(url)
        self.stream = traffic_key(project, "feedback", cluster=self.connection.cluster)

    def append(self, records: list[FeedbackRecord]) -> list[FeedbackRecord]:
        pipe = self.connection.client.pipeline(transaction=True)
        for record in records:
            pipe.xadd(self.stream, {"record": json.dumps(asdict(record))})
        ids = pipe.execute()
        return [_with_id(r, i.decode()) for r, i in zip(records, ids, strict=True)]

    def read_all(self) -> list[FeedbackRecord]:
        out = []
        for stream_id, fields in self.connection.client.xrange(self.stream):
            data = json.loads(fields[b"record"])
            out.append(FeedbackRecord(**{**data, "event_id": stream_id.decode()}))
        return out


def _with_id(record: FeedbackRecord, event_id: str) -> FeedbackRecord:
    return FeedbackRecord(**{**asdict(record), "event_id": event_id})


def open_feedback_log(local_path: Path, redis_url: str | None, project: str) -> FeedbackLog:
    """The Redis stream of `project` when `redis_url` is set, else the local log at
    `local_path`."""
    return RedisFeedbackLog(redis_url, project) if redis_url else LocalFeedbackLog(local_path)
