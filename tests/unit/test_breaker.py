"""The online store's circuit breaker, on a clock the test moves."""

from __future__ import annotations

import pytest

from serving.stages.breaker import BreakerOpen, StoreBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """Counts reads; fails while `down`."""

    def __init__(self) -> None:
        self.down, self.reads = False, 0

    def read(self) -> str:
        self.reads += 1
        if self.down:
            raise ConnectionError("store down")
        return "row"


def test_a_failure_opens_it_reads_skip_the_store_then_one_probe_closes_it() -> None:
    clock, store = Clock(), Store()
    breaker = StoreBreaker(open_s=1.0, clock=clock)
    assert breaker.call(store.read, (ConnectionError,)) == "row"
    store.down = True
    with pytest.raises(ConnectionError):
        breaker.call(store.read, (ConnectionError,))
    assert breaker.is_open and breaker.opened == 1
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            breaker.call(store.read, (ConnectionError,))
    assert store.reads == 2, "reads while open must not reach the store"
    clock.now += 1.0
    with pytest.raises(ConnectionError):  # the probe fails: open again
        breaker.call(store.read, (ConnectionError,))
    assert breaker.is_open and breaker.opened == 2 and store.reads == 3
    store.down = False
    clock.now += 1.0
    assert breaker.call(store.read, (ConnectionError,)) == "row"
    assert not breaker.is_open
    assert breaker.call(store.read, (ConnectionError,)) == "row" and store.reads == 5


def test_other_errors_pass_through_without_opening_it() -> None:
    breaker = StoreBreaker(open_s=1.0, clock=Clock())

    def broken() -> str:
        raise KeyError("a bug, not the store")

    with pytest.raises(KeyError):
        breaker.call(broken, (ConnectionError,))
    assert not breaker.is_open and breaker.opened == 0
