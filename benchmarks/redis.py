"""The Redis a benchmark measures against: `$REDIS_URL`, else database 14 of 127.0.0.1:6379
(flushed before and after; the tests use 13). A benchmark does not start servers: when none
answers it says how to start one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import redis

BENCH_URL = "redis://127.0.0.1:6379/14"


@contextmanager
def bench_redis() -> Iterator[str]:
    """The Redis URL to use, its database flushed on the way in and out."""
    url = os.environ.get("REDIS_URL") or BENCH_URL
    if not url.startswith(("redis://", "rediss://")):
        raise SystemExit(
            "REDIS_URL: the benchmarks flush one server's database; for a Redis Cluster run "
            "`python -m benchmarks.bench_online --cluster` (REDIS_CLUSTER_URL names one)"
        )
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError as error:
        where = urlparse(url)
        raise SystemExit(
            f"no Redis answers at {where.hostname}:{where.port} ({error}); start one, e.g. "
            f"`redis-server --port {where.port or 6379} --save '' --appendonly no`, or set "
            "REDIS_URL"
        ) from None
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
