"""The app's limits, on a deployment of this module's own with tight ones: a Recommender that
runs two requests at a time and queues one more (`max_ongoing_requests` 2,
`max_queued_requests` 1), a proxy deadline of 4 s (`request_timeout_s`), and online reads on a
Redis of the module's own that wait up to 8 s (`store_timeout_s`), so a hung Redis (SIGSTOP)
makes a slow request without touching the code:

- a burst beyond the queue: fast 503s with Retry-After, the rest answered, nothing else;
- `/healthz` answers while a request waits on the store (the Recommender runs its blocking
  stages on a worker thread, its event loop stays free);
- a request still running at the deadline is answered 408 by the proxy (Serve's own answer,
  a plain-text body: the one error not in FastAPI's shape).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pinfeed.home import ProjectHome
from serving.client import get_json
from serving.config import ServingConfig
from serving.deploy import shutdown
from tests.support.homes import RUN_ID, load_redis, shared_serving_home, users_with_clusters
from tests.support.redis import RedisProcess
from tests.support.serving import call, post_raw, start_app, zero_cpu_deployments

pytestmark = [pytest.mark.slow, pytest.mark.redis]
DEADLINE_S = 4.0
STORE_TIMEOUT_S = 8.0
BURST = 24


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, module_redis: RedisProcess) -> ProjectHome:
    home = shared_serving_home(tmp_path_factory.getbasetemp())
    load_redis(home, module_redis.endpoint.url)
    return home


@pytest.fixture(scope="module")
def base_url(
    ray_local: None,
    home: ProjectHome,
    module_redis: RedisProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    config = ServingConfig(
        home=home.root,
        run_id=RUN_ID,
        redis_url=module_redis.endpoint.url,
        state_dir=tmp_path_factory.mktemp("limits-state"),
        candidates=200,
        store_timeout_s=STORE_TIMEOUT_S,
        cache_refresh_s=600.0,  # no background refresh reads the hung store meanwhile
    )
    deployments = tuple(
        d.model_copy(update={"max_ongoing_requests": 2, "max_queued_requests": 1})
        if d.name == "Recommender"
        else d
        for d in zero_cpu_deployments()
    )
    yield start_app(config, deployments=deployments, request_timeout_s=DEADLINE_S)
    shutdown()


def recommend(base_url: str, user: int) -> tuple[int, object, dict[str, str], float]:
    body = json.dumps({"user_id": user, "k": 5}).encode()
    started = time.monotonic()
    status, answer, headers = post_raw(f"{base_url}/recommend", body)
    return status, answer, headers, time.monotonic() - started


def test_a_burst_beyond_the_queue_gets_fast_503s_and_the_rest_answers(
    base_url: str, home: ProjectHome
) -> None:
    user = users_with_clusters(home)[0]
    assert call(f"{base_url}/recommend", {"user_id": user, "k": 5})[0] == 200
    start = threading.Barrier(BURST)

    def one(_: int) -> tuple[int, object, dict[str, str], float]:
        start.wait()
        return recommend(base_url, user)

    with ThreadPoolExecutor(BURST) as pool:
        answers = list(pool.map(one, range(BURST)))
    statuses = sorted(status for status, *_ in answers)
    assert set(statuses) <= {200, 503}, statuses
    refused = [(answer, headers, s) for status, answer, headers, s in answers if status == 503]
    assert refused and statuses.count(200) >= 1, statuses
    for answer, headers, seconds in refused:
        assert headers.get("retry-after") == "1", headers
        assert answer["detail"][0]["loc"] == ["service"], answer
        assert "at capacity" in answer["detail"][0]["msg"], answer
        assert seconds < DEADLINE_S, "a refusal must not wait in a queue"
    assert call(f"{base_url}/recommend", {"user_id": user, "k": 5})[0] == 200


def test_healthz_answers_while_a_request_waits_on_the_store_and_the_deadline_is_408(
    base_url: str, home: ProjectHome, module_redis: RedisProcess
) -> None:
    user = users_with_clusters(home)[1]
    slow: list[tuple[int, object, dict[str, str], float]] = []
    module_redis.pause()
    try:
        waiting = threading.Thread(target=lambda: slow.append(recommend(base_url, user)))
        waiting.start()
        time.sleep(1.0)  # the request is on the Recommender by now, waiting on the store
        health = get_json(f"{base_url}/healthz", timeout_s=DEADLINE_S)
        assert waiting.is_alive(), f"the request did not wait on the hung store: {slow}"
        assert health["status"] == "ok" and health["model_version"].startswith(f"{RUN_ID}:")
        waiting.join(timeout=STORE_TIMEOUT_S + 30)
        status, answer, _, seconds = slow[0]
        assert status == 408 and answer is None, (status, answer)  # Serve's plain-text body
        assert DEADLINE_S - 0.5 < seconds < STORE_TIMEOUT_S, seconds
    finally:
        module_redis.resume()
    deadline = time.monotonic() + 30
    while True:  # the breaker's next probe finds the store again
        status, answer = call(f"{base_url}/recommend", {"user_id": user, "k": 5})
        if status == 200 and not answer["degraded"]:
            return
        assert time.monotonic() < deadline, (status, answer)
        time.sleep(0.5)
