"""Session-wide real services for the tests: a Redis server (tests/support/redis.py) and one
small local Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from pinfeed.feast_import import skip_feast_typechecks
from tests.support.redis import (
    PROJECT_PREFIX,
    TEST_DB,
    TEST_REDIS_ENV,
    RedisClusterProcess,
    RedisEndpoint,
    RedisProcess,
    RedisService,
    answers,
)

# This process imports Feast as pinfeed's own processes do (pinfeed/feast_import.py).
skip_feast_typechecks()

# The same generated cases on every run, so CI never sees a case no one can reproduce (a failure
# prints its reproduction blob); `HYPOTHESIS_PROFILE=explore make test` searches new ones.
hypothesis_settings.register_profile("derandomized", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derandomized"))


@pytest.fixture(scope="session", autouse=True)
def no_project_environment() -> Iterator[None]:
    """A developer's REDIS_URL or PINFEED_HOME would move every in-process store and home the
    tests make (and the session Ray's workers inherit the environment): the tests set what
    they use themselves."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("REDIS_URL", "PINFEED_HOME", "PINFEED_ADMIN_TOKEN", "PINFEED_FEAST_REDIS"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """A real three-master Redis Cluster of the session's own (started when first asked for)."""
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_endpoint(request: pytest.FixtureRequest) -> Iterator[RedisService]:
    """A real Redis: 127.0.0.1:6379 (database 13) when it answers, else our own server; the
    session's Redis Cluster with PINFEED_TEST_REDIS=cluster. On the shared server the session
    deletes only the keys it wrote: its Feast projects' keys."""
    tmp_path_factory = request.getfixturevalue("tmp_path_factory")
    if os.environ.get(TEST_REDIS_ENV) == "cluster":
        yield request.getfixturevalue("redis_cluster")
        return
    if answers("127.0.0.1", 6379):
        endpoint = RedisEndpoint("127.0.0.1", 6379, TEST_DB)
        yield endpoint
        client = endpoint.client()
        ours = list(client.scan_iter(match=f"*{PROJECT_PREFIX}*".encode(), count=1000))
        for start in range(0, len(ours), 500):
            client.delete(*ours[start : start + 500])
        return
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


def _redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis server this test owns and may stop and restart (fault-injection tests)."""
    yield from _redis_process(tmp_path_factory)


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis server one test module owns, for a Serve app of the module's that uses it
    throughout, while the module's tests stop, pause or flush it."""
    yield from _redis_process(tmp_path_factory)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One small local Ray for the whole session (2 CPUs, no dashboard); Serve tests share it."""
    import ray

    from serving.environment import serve_environment

    serve_environment()  # the Serve settings `pinfeed serve` ships with
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
