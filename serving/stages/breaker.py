"""A circuit breaker in front of the online store, so a dead or hung store costs one timed-out
read, not one per request.

Closed: reads go through. A failed read opens it for `open_s`: every read in that time fails at
once (the Features stage then answers degraded from the pin cache). The first read after
`open_s` goes through as a probe: success closes it, failure opens it again. Recovery after the
store comes back therefore takes at most `open_s` plus one read.
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
    def __init__(self, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_s
        self.clock = clock
        self._open_until = float("-inf")
        self._lock = threading.Lock()
        self.opened = 0
        """How many times a failure opened it (status counter)."""

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def call(self, read: Callable[[], T], failures: tuple[type[BaseException], ...]) -> T:
        """`read()`, unless the breaker is open (`BreakerOpen`); a `failures` exception opens
        it and propagates."""
        with self._lock:
            if self.clock() < self._open_until:
                raise BreakerOpen(f"online store skipped for {self.open_s:g} s after a failure")
        try:
            result = read()
        except failures:
            with self._lock:
                self._open_until = self.clock() + self.open_s
                self.opened += 1
            raise
        return result
