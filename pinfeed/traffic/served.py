"""The served log: every pin of every `/recommend` answer (`ServedItem`), durable, and looked up
by (request_id, pin_id) when feedback about it arrives.

It is both the served-impression log the ingestion job reads (`pinfeed.traffic.ingest`) and the
attribution store feedback is credited through, so attribution survives a restart and is the
same on every FeedbackSink replica:

- `LocalServedLog` (default): one SQLite database in the serving state folder (WAL journal,
  `synchronous=FULL`: a committed batch survives the process and, as far as the disk honours
  fsync, the machine). Its row order is append order; (request_id, pin_id) is unique, so a
  replayed request id keeps the first answer.
- `RedisServedLog` (when Redis is configured): each batch is one `XADD` per request to the
  project's served stream (what ingestion reads) plus one hash per request (pin -> item) that
  attribution reads, expiring `ttl_s` after it was written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path

import redis
from redis.exceptions import RedisClusterException

from pinfeed.attribution import ItemKey
from pinfeed.connection import RedisConnection
from pinfeed.traffic.feedback_log import request_key, traffic_key
from pinfeed.traffic.records import ServedItem

SERVED_DB = "traffic.sqlite"
TRAFFIC_STORE_ERRORS = (sqlite3.Error, redis.RedisError, RedisClusterException, OSError)
"""What a failing traffic store raises; a cluster client that finds no node answering raises
`RedisClusterException`, which is not a `RedisError`, as well as the cluster's `RedisError`s
(a down, hung or full store)."""


def _item(data: dict) -> ServedItem:
    return ServedItem(**{**data, "probabilities": tuple(data["probabilities"])})


def _json(item: ServedItem) -> str:
    return json.dumps(asdict(item), separators=(",", ":"))


class ServedLog(ABC):
    """Append-only, durable on return, with lookups by item."""

    @abstractmethod
    def append(self, items: list[ServedItem]) -> None:
        """Record `items` durably (an item already recorded is kept as it was)."""

    @abstractmethod
    def lookup(self, keys: list[ItemKey]) -> dict[ItemKey, ServedItem]:
        """The recorded items among `keys` (unknown keys are left out)."""

    @abstractmethod
    def read_all(self) -> list[ServedItem]:
        """Every recorded item, in append order."""

    def close(self) -> None:  # noqa: B027 (most logs hold nothing to release)
        """Release what the log holds open (the local log's append connection)."""


def _open(path: Path, *, shared: bool = False) -> sqlite3.Connection:
    """A connection to the local traffic database (`shared`: usable from any thread, the
    caller serialises)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0, check_same_thread=not shared)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


@contextmanager
def sqlite_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to the local traffic database, committed on success. WAL lets the
    Recommender replicas append while FeedbackSink replicas read; `timeout` waits out a
    concurrent writer instead of failing."""
    with closing(_open(path)) as connection, connection:
        yield connection


def _create_table(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS served (request_id INTEGER NOT NULL, "
        "pin_id INTEGER NOT NULL, item TEXT NOT NULL, UNIQUE (request_id, pin_id))"
    )


class LocalServedLog(ServedLog):
    """Appends go through one connection kept open (opening one per batch cost 4x the CPU of
    the write itself, on the Recommender's GIL); reads open their own. So the database file must
    stay where it is while a Recommender runs: appends to a deleted or moved file would go to
    the old one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._appender: sqlite3.Connection | None = None
        self._appending = threading.Lock()
        with sqlite_connection(path) as db:
            _create_table(db)

    def append(self, items: list[ServedItem]) -> None:
        rows = [(i.request_id, i.pin_id, _json(i)) for i in items]
        with self._appending:
            try:
                if self._appender is None:
                    self._appender = _open(self.path, shared=True)
                    with self._appender:
                        _create_table(self._appender)
                with self._appender:  # one transaction, committed (fsync) on return
                    self._appender.executemany(
                        "INSERT OR IGNORE INTO served (request_id, pin_id, item) VALUES (?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error:  # reopen on the next append (a full disk, a long lock)
                self._close_appender()
                raise

    def close(self) -> None:
        with self._appending:
            self._close_appender()

    def _close_appender(self) -> None:
        if self._appender is not None:
            self._appender.close()
            self._appender = None

    def lookup(self, keys: list[ItemKey]) -> dict[ItemKey, ServedItem]:
        found: dict[ItemKey, ServedItem] = {}
        with sqlite_connection(self.path) as db:
            for request_id, pin_id in set(keys):
                row = db.execute(
                    "SELECT item FROM served WHERE request_id = ? AND pin_id = ?",
                    (int(request_id), int(pin_id)),
                ).fetchone()
                if row is not None:
                    found[(int(request_id), int(pin_id))] = _item(json.loads(row[0]))
        return found

    def read_all(self) -> list[ServedItem]:
        if not self.path.is_file():
            return []
        with sqlite_connection(self.path) as db:
            rows = db.execute("SELECT item FROM served ORDER BY rowid").fetchall()
        return [_item(json.loads(row[0])) for row in rows]


class RedisServedLog(ServedLog):
    def __init__(self, url: str, project: str, ttl_s: float) -> None:
        self.connection = RedisConnection(url)
        self.project = project
        self.stream = traffic_key(project, "served", cluster=self.connection.cluster)
        self.ttl_s = max(int(ttl_s), 1)

    def _item_key(self, request_id: int) -> str:
        return request_key(
            self.project, "served-items", request_id, cluster=self.connection.cluster
        )

    def append(self, items: list[ServedItem]) -> None:
        """One MULTI/EXEC on a single server. On a cluster the stream entries are one
        transaction (one slot) and the item hashes, spread over the masters, a plain pipeline
        after it: a failure between the two is retried whole by the recorder, and both halves
        are idempotent under that retry (`read_all` keeps the first answer per item, HSETNX
        the first value)."""
        by_request: dict[int, list[ServedItem]] = defaultdict(list)
        for item in items:
            by_request[item.request_id].append(item)
        client = self.connection.client
        pipe = client.pipeline(transaction=True)
        hashes = client.pipeline(transaction=False) if self.connection.cluster else pipe
        for request_id, group in by_request.items():
            pipe.xadd(self.stream, {"items": json.dumps([asdict(i) for i in group])})
            key = self._item_key(request_id)
            for item in group:
                hashes.hsetnx(key, str(item.pin_id), _json(item))
            hashes.expire(key, self.ttl_s)
        pipe.execute()
        if hashes is not pipe:
            hashes.execute()

    def lookup(self, keys: list[ItemKey]) -> dict[ItemKey, ServedItem]:
        unique = sorted(set(keys))
        pipe = self.connection.client.pipeline(transaction=False)
        for request_id, pin_id in unique:
            pipe.hget(self._item_key(request_id), str(pin_id))
        found = {}
        for key, raw in zip(unique, pipe.execute(), strict=True):
            if raw is not None:
                found[(int(key[0]), int(key[1]))] = _item(json.loads(raw))
        return found

    def read_all(self) -> list[ServedItem]:
        seen: set[ItemKey] = set()
        out = []
        for _, fields in self.connection.client.xrange(self.stream):
            for data in json.loads(fields[b"items"]):
                item = _item(data)
                if (item.request_id, item.pin_id) not in seen:  # first answer wins, as locally
                    seen.add((item.request_id, item.pin_id))
                    out.append(item)
        return out


def open_served_log(state: Path, redis_url: str | None, project: str, ttl_s: float) -> ServedLog:
    """The project's Redis served log when `redis_url` is set, else the local one in `state`."""
    if redis_url:
        return RedisServedLog(redis_url, project, ttl_s)
    return LocalServedLog(state / SERVED_DB)
