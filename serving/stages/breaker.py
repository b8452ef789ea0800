"""Circuit breakers: `StoreBreaker` in front of the online store, so a dead or hung store costs
one timed-out read per `open_s`, not one per request; `Detour`, the same idea for a deployment
a caller can do without (the Recommender ranks in-process while the Ranker is lost).

StoreBreaker:

Closed: reads go through. A failed read opens it for `open_s`: every read in that time fails at
once (the Features stage then answers degraded from the pin cache). The first read after
`open_s` is the one probe: while it runs, every other read still fails at once; its success
closes the breaker, its failure opens it for another `open_s`. Recovery after the store comes
back therefore takes at most `open_s` plus one read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class BreakerOpen(Exception):
    """Raised instead of calling the store while the breaker is open."""


class StoreBreaker:
    """Thread-safe: the Recommender runs requests on worker threads."""

    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_s
        self.clock = clock
        self._tripped = False
        self._open_until = float("-inf")
        self._lock = threading.Lock()
        self.opened = 0
        """How many times it went from closed to open (status counter)."""

    @property
    def is_open(self) -> bool:
        return self._tripped

    def call(self, read: Callable[[], T], failures: tuple[type[BaseException], ...]) -> T:
        """`read()`, unless the breaker is open (`BreakerOpen`); a `failures` exception opens
        it and propagates."""
        with self._lock:
            now = self.clock()
            if now < self._open_until:
                raise BreakerOpen(f"online store skipped for {self.open_s:g} s after a failure")
            probe = self._tripped
            if probe:  # this caller probes; the others keep failing fast meanwhile
                self._open_until = now + self.open_s
        try:
            result = read()
        except failures:
            with self._lock:
                self.opened += not self._tripped
                self._tripped = True
                self._open_until = self.clock() + self.open_s
            raise
        if probe:
            with self._lock:
                self._tripped = False
                self._open_until = float("-inf")
        return result


class Detour:
    """When to skip a deployment a call failed to reach and take one's own way round: for
    `skip_s` after a failure every call detours at once instead of waiting out the same
    failure; after that one call at a time probes the deployment (the others keep detouring)
    until one gets through.

    Protocol: `take()`; if True, call the deployment, report `through()` or `failed(reason)`
    when it told something, and `released()` in a `finally` whatever happened (a cancelled
    call tells nothing, and must not leave the probe taken for ever).

    Event-loop state, no lock: a replica's handle calls all start and end on its event loop.
    """

    def __init__(self, skip_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.skip_s = skip_s
        self.clock = clock
        self.reason: str | None = None
        """Why the last call that told anything failed ("lost", "slow"); None: it got through."""
        self._until = float("-inf")
        self._probing = False

    def take(self) -> bool:
        """True: call the deployment; False: detour now."""
        if self.reason is None:
            return True
        if self._probing or self.clock() < self._until:
            return False
        self._probing = True
        return True

    def through(self) -> None:
        """The deployment answered (with a result or an error of its own): stop detouring."""
        self.reason = None

    def failed(self, reason: str) -> None:
        """It was lost or did not answer in time: detour for `skip_s`."""
        self.reason = reason
        self._until = self.clock() + self.skip_s

    def released(self) -> None:
        """The call `take` allowed is over: another call may probe."""
        self._probing = False
