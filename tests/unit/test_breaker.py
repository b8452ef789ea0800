"""The circuit breakers (the online store's, the Recommender's detour round a lost Ranker), on a
clock the test moves."""

from __future__ import annotations

import pytest

from serving.stages.breaker import BreakerOpen, Detour, StoreBreaker

FAILURES = (ConnectionError,)


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
    assert breaker.call(store.read, FAILURES) == "row"
    store.down = True
    with pytest.raises(ConnectionError):
        breaker.call(store.read, FAILURES)
    assert breaker.is_open and breaker.opened == 1
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            breaker.call(store.read, FAILURES)
    assert store.reads == 2, "reads while open must not reach the store"
    clock.now += 1.0
    with pytest.raises(ConnectionError):  # the probe fails: open again, still one outage
        breaker.call(store.read, FAILURES)
    assert breaker.is_open and breaker.opened == 1 and store.reads == 3
    with pytest.raises(BreakerOpen):
        breaker.call(store.read, FAILURES)
    store.down = False
    clock.now += 1.0
    assert breaker.call(store.read, FAILURES) == "row"
    assert not breaker.is_open
    assert breaker.call(store.read, FAILURES) == "row" and store.reads == 5


def test_only_one_probe_reaches_the_store_while_it_runs() -> None:
    clock, store = Clock(), Store()
    breaker = StoreBreaker(open_s=1.0, clock=clock)
    store.down = True
    with pytest.raises(ConnectionError):
        breaker.call(store.read, FAILURES)
    clock.now += 1.5
    store.down = False
    others: list[str] = []

    def probe() -> str:
        """While the probe is in flight, another request asks: it must not reach the store."""
        try:
            breaker.call(store.read, FAILURES)
            others.append("reached the store")
        except BreakerOpen:
            others.append("skipped")
        return store.read()

    assert breaker.call(probe, FAILURES) == "row"
    assert others == ["skipped"] and store.reads == 2 and not breaker.is_open


def test_other_errors_pass_through_without_opening_it() -> None:
    breaker = StoreBreaker(open_s=1.0, clock=Clock())

    def broken() -> str:
        raise KeyError("a bug, not the store")

    with pytest.raises(KeyError):
        breaker.call(broken, FAILURES)
    assert not breaker.is_open and breaker.opened == 0


def test_detour_skips_a_failed_deployment_then_probes_it_one_call_at_a_time() -> None:
    clock = Clock()
    detour = Detour(skip_s=2.0, clock=clock)
    assert detour.take() and detour.reason is None
    detour.through()
    detour.released()
    assert detour.take()
    detour.failed("lost")
    detour.released()
    assert not detour.take() and detour.reason == "lost"  # detours at once, no second wait
    clock.now += 1.9
    assert not detour.take()
    clock.now += 0.2
    assert detour.take()  # the probe
    assert not detour.take()  # the others keep detouring while it runs
    detour.failed("slow")
    detour.released()
    assert not detour.take() and detour.reason == "slow"
    clock.now += 2.1
    assert detour.take()
    detour.released()  # that call was cancelled and told nothing: another call may probe
    assert detour.take()
    detour.through()
    detour.released()
    assert detour.take() and detour.take() and detour.reason is None
