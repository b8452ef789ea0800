"""Open-loop HTTP load: requests leave on a schedule fixed before the run (Poisson arrivals at
`rate` per second), whatever the server does, and each latency is measured from the request's
*scheduled* time. A closed-loop client waits for each answer before it sends the next, so when
the server stalls it stops sending and the stall shows up as one slow request instead of every
request that should have been sent meanwhile (coordinated omission); here those requests queue
in the client and their wait counts, as wrk2 measures. Not a test.

No maintained open-loop tool installs from the package registries this project may use (wrk2
is C, vegeta and k6 are Go binaries), so this is a small one: a dispatcher thread releases
requests at their scheduled times to a pool of `workers` threads, each with a keep-alive
connection. A request that waits for a free worker is late by that wait, and its latency shows
it. `Outcome.scheduled_s` lets fault runs cut the timeline into windows.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Outcome:
    """One request: when it was due (s after the start), how long from then to its answer, the
    HTTP status (0: no answer: connection error or client timeout), whether a 200 was flagged
    degraded, and the model version a 200 named ("" otherwise)."""

    scheduled_s: float
    latency_s: float
    status: int
    degraded: bool
    model_version: str


@dataclass(frozen=True)
class OpenLoopRun:
    """Every request of a run, in scheduled order, and the wall-clock time (`time.time()`)
    its schedule started, so a caller can place its own events on the run's timeline."""

    started_at: float
    outcomes: list[Outcome]


@dataclass(frozen=True)
class OpenLoopResult:
    rate: float
    sent: int
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int
    degraded: int


def arrivals(rate: float, seconds: float, seed: int) -> np.ndarray:
    """Poisson arrival times in [0, seconds) at `rate` per second."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 16)
    times = np.cumsum(gaps)
    return times[times < seconds]


def _send(connection: http.client.HTTPConnection, body: str) -> tuple[int, bool, str]:
    connection.request("POST", "/recommend", body, HEADERS)
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        return response.status, False, ""
    answer = json.loads(payload)  # the one-process baseline's answers carry neither field
    return 200, bool(answer.get("degraded", False)), str(answer.get("model_version", ""))


def _worker(port: int, jobs: queue.SimpleQueue, start: float, timeout_s: float, out: dict) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    while (job := jobs.get()) is not None:
        index, due, body = job
        try:
            status, degraded, version = _send(connection, body)
        except (OSError, http.client.HTTPException, ValueError):
            status, degraded, version = 0, False, ""
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        out[index] = Outcome(due, time.perf_counter() - start - due, status, degraded, version)


def _run(
    port: int,
    users: list[int],
    k: int,
    rate: float,
    seconds: float,
    workers: int,
    seed: int,
    timeout_s: float,
    results: multiprocessing.Queue,
) -> None:
    """Runs in its own process so the load does not share the benchmark's interpreter."""
    schedule = arrivals(rate, seconds, seed)
    rng = np.random.default_rng(seed + 1)
    bodies = [json.dumps({"user_id": int(u), "k": k}) for u in rng.choice(users, len(schedule))]
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    out: dict[int, Outcome] = {}
    started_at, start = time.time(), time.perf_counter()
    pool = [
        threading.Thread(target=_worker, args=(port, jobs, start, timeout_s, out), daemon=True)
        for _ in range(workers)
    ]
    for thread in pool:
        thread.start()
    for index, (due, body) in enumerate(zip(schedule, bodies, strict=True)):
        wait = start + due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        jobs.put((index, float(due), body))
    for _ in pool:
        jobs.put(None)
    give_up = time.perf_counter() + timeout_s + 5.0
    for thread in pool:
        thread.join(timeout=max(0.0, give_up - time.perf_counter()))
    ended = time.perf_counter() - start
    outcomes = [  # a request still queued or in flight now failed, as slow as it has been
        out.get(index, Outcome(float(due), ended - float(due), 0, False, ""))
        for index, due in enumerate(schedule)
    ]
    results.put(OpenLoopRun(started_at, outcomes))


def open_loop(
    port: int,
    users: list[int],
    k: int,
    rate: float,
    seconds: float,
    *,
    workers: int = 64,
    seed: int = 0,
    timeout_s: float = 10.0,
) -> OpenLoopRun:
    """An open-loop run at `rate` req/s for `seconds`."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(
        target=_run, args=(port, users, k, rate, seconds, workers, seed, timeout_s, results)
    )
    process.start()
    try:
        run = results.get(timeout=seconds + timeout_s + 120.0)
    except queue.Empty:
        raise RuntimeError(
            f"the open-loop load process gave no results (exit code {process.exitcode})"
        ) from None
    finally:
        process.join(timeout=30.0)
    return run


def summarise(rate: float, seconds: float, outcomes: list[Outcome]) -> OpenLoopResult:
    """Percentiles over every request (an error counts at its latency too: a fast 503 is
    not hidden, a timeout is as slow as it was), throughput of 200s per second from the start
    until the last answer (past saturation answers arrive long after the schedule ends)."""
    if not outcomes:
        return OpenLoopResult(rate, 0, float("nan"), float("nan"), 0.0, 0, 0)
    ms = np.array([o.latency_s for o in outcomes]) * 1000.0
    ok = sum(1 for o in outcomes if o.status == 200)
    span = max(seconds, max(o.scheduled_s + o.latency_s for o in outcomes))
    return OpenLoopResult(
        rate=rate,
        sent=len(outcomes),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        rps=ok / span,
        errors=len(outcomes) - ok,
        degraded=sum(1 for o in outcomes if o.degraded),
    )
