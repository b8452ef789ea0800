"""What each online store has been loaded with, kept inside that store.

Why not Feast's own record: Feast keeps materialisation intervals in the registry, and pinfeed's
SQLite and Redis configs share one registry, so after `make run` filled SQLite an incremental
load into a new Redis believed every view loaded and wrote nothing. The ledger here lives in the
online store it describes (a table beside Feast's in the SQLite file, a hash in Redis): flush
Redis and the ledger goes with the data, so the next load is full. Values lost while the ledger
stayed (a Feast teardown, eviction) are caught by `materialize` reading a sample back.

Per view it holds a `LoadMark`: the end of the last window loaded, the newest offline row and
the number of offline rows at that time. New rows are appended after the newest one, so the next
incremental load starts at `LoadMark.resume_at` and holds exactly the rows that came since. A
table whose older part changed size was rewritten (a rebuild that added rows in the past) and is
reloaded whole; rows rewritten in place with the same count (an ingest followed by `features
build`) need `materialize --since` or `--full`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from feast import FeatureStore
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from pinfeed.errors import ConfigError

logger = logging.getLogger(__name__)
TICK = timedelta(microseconds=1)  # the resolution of the feature tables' timestamps


@dataclass(frozen=True)
class LoadMark:
    """A view's last load into one online store."""

    view: str
    loaded_until: datetime  # end of the last window loaded
    offline_newest: datetime  # newest offline row when it was loaded
    loaded_at: datetime  # wall clock of that load
    offline_rows: int = -1  # offline rows at that time (-1: unknown)

    @property
    def resume_at(self) -> datetime:
        """The first instant not loaded yet, where the next incremental window starts: just
        after the newest row loaded, or after the window's end (inclusive) when the table
        already held rows past it. Not at the newest row itself: reloading it would overwrite
        a newer realtime push on SQLite, which writes without comparing timestamps."""
        return min(self.loaded_until, self.offline_newest) + TICK

    def to_json(self) -> str:
        return json.dumps(
            {
                "loaded_until": self.loaded_until.isoformat(),
                "offline_newest": self.offline_newest.isoformat(),
                "loaded_at": self.loaded_at.isoformat(),
                "offline_rows": self.offline_rows,
            }
        )

    @classmethod
    def from_json(cls, view: str, raw: str | bytes) -> LoadMark:
        data = json.loads(raw)
        return cls(
            view=view,
            loaded_until=datetime.fromisoformat(data["loaded_until"]),
            offline_newest=datetime.fromisoformat(data["offline_newest"]),
            loaded_at=datetime.fromisoformat(data["loaded_at"]),
            offline_rows=int(data.get("offline_rows", -1)),
        )


class Ledger(Protocol):
    def read(self) -> dict[str, LoadMark]: ...

    def write(self, marks: Iterable[LoadMark]) -> None: ...


class SqliteLedger:
    """A `<project>_pinfeed_loads` table in the SQLite online store's file."""

    def __init__(self, path: str, project: str) -> None:
        self.path = path
        self.table = f'"{project}_pinfeed_loads"'

    def read(self) -> dict[str, LoadMark]:
        with closing(sqlite3.connect(self.path)) as conn:
            if not _has_table(conn, self.table.strip('"')):
                return {}
            rows = conn.execute(f"SELECT view, mark FROM {self.table}").fetchall()
        return _parsed(rows)

    def write(self, marks: Iterable[LoadMark]) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (view TEXT PRIMARY KEY, mark TEXT)"
            )
            conn.executemany(
                f"INSERT OR REPLACE INTO {self.table} (view, mark) VALUES (?, ?)",
                [(mark.view, mark.to_json()) for mark in marks],
            )


class RedisLedger:
    """A hash `pinfeed_loads:<project>` (view -> mark) on the Redis online store."""

    def __init__(self, client: Any, project: str) -> None:
        self.client = client
        self.key = f"pinfeed_loads:{project}"

    def read(self) -> dict[str, LoadMark]:
        raw = self.client.hgetall(self.key)
        return _parsed((_text(view), mark) for view, mark in raw.items())

    def write(self, marks: Iterable[LoadMark]) -> None:
        mapping = {mark.view: mark.to_json() for mark in marks}
        if mapping:
            self.client.hset(self.key, mapping=mapping)


def open_ledger(store: FeatureStore) -> Ledger:
    """The ledger of `store`'s online store (SQLite or Redis; other stores are not supported)."""
    config = store.config
    kind = config.online_store.type
    if kind == "sqlite" or kind.endswith("SqliteOnlineStore"):
        return SqliteLedger(SqliteOnlineStore._get_db_path(config), config.project)
    if kind == "redis" or kind.endswith("RedisOnlineStore"):
        online = store._get_provider().online_store
        return RedisLedger(online._get_client(config.online_store), config.project)
    raise ConfigError(f"online_store.type: {kind!r} is not supported (sqlite or redis)")


def new_mark(view: str, end: datetime, offline_newest: datetime, offline_rows: int) -> LoadMark:
    return LoadMark(view, end, offline_newest, datetime.now(UTC), offline_rows)


def _parsed(rows: Iterable[tuple[str, str | bytes]]) -> dict[str, LoadMark]:
    """The marks that parse; an entry that does not (written by a newer version, damaged) is
    dropped with a warning, so its view gets a full load rather than an error."""
    marks = {}
    for view, raw in rows:
        try:
            marks[view] = LoadMark.from_json(view, raw)
        except (ValueError, KeyError, TypeError) as error:
            logger.warning(
                "load ledger entry of %s ignored (%s): the next load is full", view, error
            )
    return marks


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return found.fetchone() is not None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
