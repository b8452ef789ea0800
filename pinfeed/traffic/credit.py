"""Which served items have already earned reward credit, shared by every process that credits
feedback, and the lock that serialises their read-add-push of reward rows.

The realtime reward update reads a user's cluster counts, adds a batch's increments and pushes
the rows back (`feature_repo.realtime_rewards`). Two FeedbackSink replicas doing that for one
user at once would lose an increment, and a replica restarted with an empty memory would credit
a retried event twice. So both the credit ledger and the lock live where every replica sees
them: the local traffic database and a file lock by default, Redis when it is configured. The
ledger is written only after the push succeeded, under the lock, so a failed push leaves the
events uncredited (the offline job still counts them) rather than credited and lost.
"""

from __future__ import annotations

import fcntl
import threading
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pinfeed.attribution import CREDITS, Credited, ItemKey
from pinfeed.connection import RedisConnection
from pinfeed.errors import PinfeedError
from pinfeed.traffic.feedback_log import request_key, traffic_key
from pinfeed.traffic.served import SERVED_DB, sqlite_connection

LOCK_TIMEOUT_S = 10.0
"""How long a writer waits for the lock before giving up (the events stay in the log)."""
LOCK_LEASE_S = 120.0
"""How long a Redis lock outlives a holder that died without releasing it; far above one
update (a 1000-event batch is a few Redis round trips of at most 2 s each)."""


class CreditLockTimeout(PinfeedError):
    """Another process held the reward lock too long (a hung replica or store)."""


class CreditLedger(ABC):
    @abstractmethod
    def credited(self, keys: list[ItemKey]) -> Credited:
        """The credits already given to the items `keys`."""

    @abstractmethod
    def add(self, new: Credited) -> None:
        """Record `new` credits (call under `lock`, after the push succeeded)."""

    @abstractmethod
    def lock(self) -> AbstractContextManager[None]:
        """Held across read-add-push-record of reward rows, across processes."""


class LocalCreditLedger(CreditLedger):
    def __init__(self, state: Path) -> None:
        self.path = state / SERVED_DB
        self.lock_path = state / (SERVED_DB + ".lock")
        with sqlite_connection(self.path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS credit (request_id INTEGER NOT NULL, "
                "pin_id INTEGER NOT NULL, credit TEXT NOT NULL, "
                "PRIMARY KEY (request_id, pin_id, credit))"
            )

    def credited(self, keys: list[ItemKey]) -> Credited:
        given: dict[str, set[ItemKey]] = defaultdict(set)
        with sqlite_connection(self.path) as db:
            for request_id, pin_id in set(keys):
                for (credit,) in db.execute(
                    "SELECT credit FROM credit WHERE request_id = ? AND pin_id = ?",
                    (int(request_id), int(pin_id)),
                ):
                    given[credit].add((int(request_id), int(pin_id)))
        return Credited(*(frozenset(given[c]) for c in CREDITS))

    def add(self, new: Credited) -> None:
        with sqlite_connection(self.path) as db:
            db.executemany(
                "INSERT OR IGNORE INTO credit (request_id, pin_id, credit) VALUES (?, ?, ?)",
                new.claims(),
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive `flock` on the state folder's lock file (one host: the local backend
        is for one machine), waiting at most LOCK_TIMEOUT_S."""
        with open(self.lock_path, "a+") as handle:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise CreditLockTimeout(
                            f"reward lock {self.lock_path} not acquired in {LOCK_TIMEOUT_S:g} s"
                        ) from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class RedisCreditLedger(CreditLedger):
    def __init__(self, url: str, project: str, ttl_s: float) -> None:
        self.connection = RedisConnection(url)
        self.project = project
        self.ttl_s = max(int(ttl_s), 1)

    def _key(self, request_id: int) -> str:
        return request_key(self.project, "credit", request_id, cluster=self.connection.cluster)

    def credited(self, keys: list[ItemKey]) -> Credited:
        unique = sorted(set(keys))
        pipe = self.connection.client.pipeline(transaction=False)
        for request_id, pin_id in unique:
            pipe.hmget(self._key(request_id), [f"{pin_id}:{c}" for c in CREDITS])
        given: dict[str, set[ItemKey]] = defaultdict(set)
        for key, flags in zip(unique, pipe.execute(), strict=True):
            for credit, flag in zip(CREDITS, flags, strict=True):
                if flag is not None:
                    given[credit].add((int(key[0]), int(key[1])))
        return Credited(*(frozenset(given[c]) for c in CREDITS))

    def add(self, new: Credited) -> None:
        """One MULTI/EXEC on a single server; a plain pipeline on a cluster, where the
        requests' keys sit on different masters (under the lock either way; a partial write
        that fails leaves fewer credits recorded, as a failed transaction leaves none)."""
        pipe = self.connection.client.pipeline(transaction=not self.connection.cluster)
        for request_id, pin_id, credit in new.claims():
            pipe.hset(self._key(request_id), f"{pin_id}:{credit}", 1)
            pipe.expire(self._key(request_id), self.ttl_s)
        pipe.execute()

    @contextmanager
    def lock(self) -> Iterator[None]:
        lock = self.connection.client.lock(
            traffic_key(self.project, "reward-lock", cluster=self.connection.cluster),
            timeout=LOCK_LEASE_S,
            blocking_timeout=LOCK_TIMEOUT_S,
        )
        if not lock.acquire():
            raise CreditLockTimeout(f"reward lock not acquired in {LOCK_TIMEOUT_S:g} s")
        try:
            yield
        finally:
            lock.release()


def open_credit_ledger(
    state: Path, redis_url: str | None, project: str, ttl_s: float
) -> CreditLedger:
    """Redis when `redis_url` is set, else the local traffic database in `state`."""
    if redis_url:
        return RedisCreditLedger(redis_url, project, ttl_s)
    return LocalCreditLedger(state)


class MemoryCreditLedger(CreditLedger):
    """One process's ledger (tests, benchmarks, the simulator): lost on restart, not shared."""

    def __init__(self) -> None:
        self.given = Credited()
        self._lock = threading.Lock()

    def credited(self, keys: list[ItemKey]) -> Credited:
        wanted = set(keys)
        return Credited(*(self.given.of(c) & wanted for c in CREDITS))

    def add(self, new: Credited) -> None:
        self.given = self.given | new

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield
