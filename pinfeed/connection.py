"""The one switch to Redis: `REDIS_URL`, and what its URL means.

Every part that can keep state in Redis (the Feast online store, the feedback log, the served
log, the credit ledger) asks `redis_url_from_env` for its URL, so setting `REDIS_URL` moves all
of them together and unsetting it moves all of them back (SQLite and local files). An explicit
URL (a serve config's `redis_url`, a test) wins over the variable. The URL carries the password
(`redis://:secret@host:6379/0`), so it is read from the environment of the process that
connects and never written into a config, a log line or a Serve app's stored args.

Two kinds of Redis, told apart by the scheme (`parse_redis_url`):

- `redis://[user][:password]@host[:port][/db]` (`rediss://` for TLS): one server;
- `redis+cluster://[user][:password]@host:port[,host:port...]` (`rediss+cluster://`): a Redis
  Cluster, given by one or more seed nodes (the client discovers the rest from any of them;
  more seeds keep start-up working while one is down). A cluster has database 0 only.

`redis_client` opens either with the same timeouts; Feast gets the same target through
`feature_repo.flavours.feast_connection_string`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from pinfeed.errors import ConfigError

REDIS_URL_ENV = "REDIS_URL"
REDIS_TIMEOUT_S = 2.0
"""Socket connect/read timeout of the traffic logs' clients: a dead server fails a call in
seconds instead of hanging it (serving's online reads use their own, shorter one)."""
_SCHEMES = {
    "redis": (False, False),
    "rediss": (False, True),
    "redis+cluster": (True, False),
    "rediss+cluster": (True, True),
}
_EXAMPLE = "redis://:password@127.0.0.1:6379/0 or redis+cluster://:password@10.0.0.5:7000"


def redis_url_from_env(
    explicit: str | None = None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """`explicit` when given, else `$REDIS_URL` when set and non-empty, else None (SQLite)."""
    return explicit or environ.get(REDIS_URL_ENV) or None


@dataclass(frozen=True)
class RedisTarget:
    """Where a Redis URL points: one server, or a cluster's seed nodes."""

    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    cluster: bool = False


def parse_redis_url(url: str) -> RedisTarget:
    """The target of `url` (see the module docstring), or a ConfigError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise ConfigError(
            f"redis_url: scheme {scheme if sep else ''!r} is not one of {sorted(_SCHEMES)} "
            f"(like {_EXAMPLE})"
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(
            "redis_url: query options (?...) are not supported: Feast's connection string "
            "cannot carry them, so no part of pinfeed would honour them (percent-encode a ? or "
            "# in a password: %3F, %23)"
        )
    cluster, ssl = _SCHEMES[scheme]
    credentials, _, location = rest.rpartition("@")
    netloc, _, path = location.partition("/")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    db_text = path or "0"
    if not db_text.isdigit():
        raise ConfigError(f"redis_url: database {db_text!r} must be a number, as in {_EXAMPLE}")
    db = int(db_text)
    if cluster and db != 0:
        raise ConfigError(f"redis_url: a Redis Cluster has database 0 only, not {db}")
    nodes = tuple(_node(part) for part in netloc.split(",") if part)
    if not nodes:
        raise ConfigError(f"redis_url: the URL names no host (like {_EXAMPLE})")
    if len(nodes) > 1 and not cluster:
        raise ConfigError(
            "redis_url: several hosts need the redis+cluster:// scheme (a Redis Cluster)"
        )
    return RedisTarget(
        nodes=nodes,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=ssl,
        cluster=cluster,
    )


def redis_client(url: str, timeout_s: float = REDIS_TIMEOUT_S) -> redis.Redis | RedisCluster:
    """A client for `url` (a server or a cluster) that gives up after `timeout_s` instead of
    hanging on a dead server, and does not retry: redis-py's default (three retries, jittered
    backoff of up to 2 + 4 + 8 s) held a `/feedback` to a stopped server past the proxy's
    10 s deadline under load. Callers that retry (the served-log recorder) do so themselves."""
    target = parse_redis_url(url)
    common = {
        "username": target.username,
        "password": target.password,
        "ssl": target.ssl,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries=0),
    }
    if target.cluster:
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        return RedisCluster(startup_nodes=nodes, **common)
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=target.db, **common)


def _node(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "6379")
    if not host or not port.isdigit():
        # the URL is not quoted: without an `@`, `user:password` reads as a node
        raise ConfigError(f"redis_url: a node is not host:port (like {_EXAMPLE})")
    return host.strip("[]"), int(port)  # [::1]:6379 -> ::1


class RedisConnection:
    """A client for `url` made on first use, not at construction: a cluster client connects as
    it is made, and a log or ledger built while its Redis is down must not fail its owner's
    start (a Serve replica's); its first call fails instead, and each later call tries again.
    The URL is checked at once, so a wrong one still fails at start."""

    def __init__(self, url: str, timeout_s: float = REDIS_TIMEOUT_S) -> None:
        self.target = parse_redis_url(url)
        self._url = url
        self._timeout_s = timeout_s
        self._client: redis.Redis | RedisCluster | None = None
        self._lock = threading.Lock()  # this connection's own: others never wait on it

    @property
    def cluster(self) -> bool:
        return self.target.cluster

    @property
    def client(self) -> redis.Redis | RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = redis_client(self._url, self._timeout_s)
        return self._client
