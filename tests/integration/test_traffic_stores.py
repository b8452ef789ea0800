"""The traffic stores on both backends (the local SQLite database and a real Redis): the served
log keeps the first answer per item and finds items by key, the credit ledger remembers credits
across instances (processes), the lock serialises, and the recorder's overload rule drops and
counts instead of blocking an answer, while what it accepted waits out a failing log."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from pinfeed.attribution import Credited
from pinfeed.traffic.credit import LocalCreditLedger, RedisCreditLedger
from pinfeed.traffic.feedback_log import LocalFeedbackLog, RedisFeedbackLog, request_key
from pinfeed.traffic.records import FeedbackRecord, ServedItem
from pinfeed.traffic.served import LocalServedLog, RedisServedLog, ServedLog
from serving.stages.served import ServedRecorder
from tests.support.redis import PROJECT_PREFIX


def item(request_id: int, pin_id: int, position: int = 0, run_id: str = "run-a") -> ServedItem:
    return ServedItem(
        request_id=request_id, user_id=7, served_at="2026-11-25T12:00:00+00:00", pin_id=pin_id,
        position=position, cluster_id=None if pin_id % 2 else 70, query_pin_id=None,
        run_id=run_id, model_version="v+w", probabilities=(0.1, 0.2, 0.3, 0.4), utility=0.5,
    )  # fmt: skip


@pytest.fixture(params=["local", "redis", "redis_cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def redis_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of the backend's Redis (a server or a three-master cluster); unused locally."""
    if backend == "local":
        return ""
    return request.getfixturevalue(
        "redis_cluster" if backend == "redis_cluster" else "redis_endpoint"
    ).url


def served_log(backend: str, tmp_path: Path, project: str, url: str) -> ServedLog:
    if backend == "local":
        return LocalServedLog(tmp_path / "traffic.sqlite")
    return RedisServedLog(url, project, ttl_s=60)


def test_served_log_keeps_the_first_answer_and_finds_items(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    project = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:6]}"
    log = served_log(backend, tmp_path, project, redis_url)
    log.append([item(1, 10, 0), item(1, 11, 1), item(2, 10, 0)])
    log.append([item(1, 10, 5, run_id="run-b")])  # a replayed request id
    again = served_log(backend, tmp_path, project, redis_url)  # another process
    found = again.lookup([(1, 10), (1, 11), (3, 10)])
    assert set(found) == {(1, 10), (1, 11)}
    assert found[(1, 10)].run_id == "run-a" and found[(1, 11)].cluster_id is None
    assert found[(1, 11)].probabilities == (0.1, 0.2, 0.3, 0.4)
    assert [(i.request_id, i.pin_id) for i in again.read_all()] == [(1, 10), (1, 11), (2, 10)]
    if isinstance(again, RedisServedLog):
        cluster = again.connection.cluster  # PINFEED_TEST_REDIS=cluster makes "redis" one too
        key = request_key(project, "served-items", 1, cluster=cluster)
        assert key == (
            f"pinfeed:served-items:{{{project}:1}}"  # spread over the masters by request
            if cluster
            else f"pinfeed:served-items:{project}:1"  # the name single servers always had
        )
        ttl = again.connection.client.ttl(key)
        assert 0 < ttl <= 60


def test_credit_ledger_is_shared_and_its_lock_serialises(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    project = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:6]}"

    def ledger() -> LocalCreditLedger | RedisCreditLedger:
        if backend == "local":
            return LocalCreditLedger(tmp_path)
        return RedisCreditLedger(redis_url, project, ttl_s=60)

    first, second = ledger(), ledger()
    first.add(Credited(shown=frozenset({(1, 10)}), hidden=frozenset({(1, 11)})))
    seen = second.credited([(1, 10), (1, 11), (2, 10)])
    assert seen == Credited(shown=frozenset({(1, 10)}), hidden=frozenset({(1, 11)}))

    order: list[str] = []

    def hold(name: str, ledger_: LocalCreditLedger | RedisCreditLedger) -> None:
        with ledger_.lock():
            order.append(f"{name} in")
            time.sleep(0.3)
            order.append(f"{name} out")

    pairs = (("a", first), ("b", second))
    threads = [threading.Thread(target=hold, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert order == ["a in", "a out", "b in", "b out"]


def test_feedback_log_gives_ids_and_reads_back_in_order(
    backend: str, tmp_path: Path, redis_url: str
) -> None:
    """What `/feedback` acknowledges is recorded under the id it returned, in append order,
    and another instance (process) reads it back."""
    project = f"{PROJECT_PREFIX}{uuid.uuid4().hex[:6]}"

    def log() -> LocalFeedbackLog | RedisFeedbackLog:
        if backend == "local":
            return LocalFeedbackLog(tmp_path / "feedback.jsonl")
        return RedisFeedbackLog(redis_url, project)

    events = [
        FeedbackRecord(
            event_id="", request_id=1, pin_id=pin, kind="click",
            event_ts="2026-11-25T12:00:00+00:00", user_id=7, dwell_s=12.5,
        )
        for pin in (10, 11, 12)
    ]  # fmt: skip
    written = log().append(events[:2]) + log().append(events[2:])
    assert len({r.event_id for r in written}) == 3 and all(r.event_id for r in written)
    assert log().read_all() == written


class GatedLog(LocalServedLog):
    """A local served log whose appends wait for `gate` (a slow or stalled store)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()

    def append(self, items: list[ServedItem]) -> None:
        self.gate.wait(timeout=30)
        super().append(items)


def test_recorder_drops_and_counts_when_the_log_falls_behind(tmp_path: Path) -> None:
    log = GatedLog(tmp_path / "traffic.sqlite")
    recorder = ServedRecorder(log, capacity=4)
    started = time.perf_counter()
    accepted = [recorder.offer([item(r, 10), item(r, 11)]) for r in range(4)]
    assert time.perf_counter() - started < 5.0  # offers never wait for the store (gate: 30 s)
    assert accepted == [True, True, False, False]
    assert recorder.dropped == 4
    log.gate.set()
    assert recorder.flush(timeout_s=10)
    assert recorder.recorded == 4 and len(log.read_all()) == 4
    recorder.close()


def test_recorder_holds_and_retries_what_the_log_cannot_take(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The served log's folder replaced by a file before its first append (unwritable, even
    for root): offers still return at once, items past capacity are dropped and counted, the
    accepted ones wait in the queue while appends fail, and all of them land once the log can
    be written again (retried, never silently lost)."""
    state = tmp_path / "state"
    recorder = ServedRecorder(LocalServedLog(state / "traffic.sqlite"), capacity=4)
    kept = state.rename(tmp_path / "state.kept")
    state.write_text("a file where the state folder was")
    try:
        accepted = [recorder.offer([item(r, 10), item(r, 11)]) for r in range(4)]
        assert accepted == [True, True, False, False] and recorder.dropped == 4
        deadline = time.monotonic() + 30
        while "served log append failed, retrying" not in caplog.text:
            assert time.monotonic() < deadline, "no append was tried"
            time.sleep(0.05)
        assert recorder.recorded == 0 and recorder.dropped == 4
    finally:
        state.unlink()
        kept.rename(state)
    assert recorder.flush(timeout_s=30)
    assert recorder.recorded == 4 and recorder.dropped == 4
    landed = LocalServedLog(state / "traffic.sqlite").read_all()
    assert [(i.request_id, i.pin_id) for i in landed] == [(0, 10), (0, 11), (1, 10), (1, 11)]
    recorder.close()
