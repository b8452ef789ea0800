"""Which Feast config a project home's store opens: an online flavour and an offline engine.

Two online stores, one repo:

- SQLite (default): `feature_store.yaml`, the online store is `<home>/data/feast/online_store.db`.
  Nothing to run; single machine.
- Redis: chosen when `open_store(..., redis_url=...)` is given one or `REDIS_URL` is set, e.g.
  `REDIS_URL=redis://:secret@10.0.0.5:6379/2`, or a Redis Cluster
  (`REDIS_URL=redis+cluster://:secret@10.0.0.5:7000,10.0.0.6:7000`, read from
  `feature_store.redis_cluster.yaml`). The config comes from `feature_store.redis.yaml`
  with its connection string built here from the URL (Feast wants `host:port,db=N,password=...`);
  the file is never rewritten and the password only ever comes from the environment or the
  caller. The Feast CLI reads the same file with the string in `PINFEED_FEAST_REDIS`:
  `PINFEED_FEAST_REDIS=host:6379,db=2,password=... feast -c feature_repo -f
  feature_repo/feature_store.redis.yaml materialize-incremental <ts>`
  (`feast_connection_string(url)` prints the value to export).

Both flavours share the registry and offline store under `<home>/data/`. Online reads use full
feature names (`view__feature`), because the query pin projection repeats pin_content's names.

Two offline engines over the same parquet sources, chosen by `engine=` or
`PINFEED_OFFLINE_ENGINE`:

- `local` (default): DuckDB joins, materialisation on the driver; fastest on one machine.
- `ray`: Feast's Ray offline store and Ray compute engine (`feature_store.ray.yaml`), on the Ray
  cluster in `RAY_ADDRESS` or a local one. Training sets equal the local ones row for row
  (tests/integration/test_ray_offline.py); it pays off only with more nodes than one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from feast import RepoConfig

from pinfeed.connection import parse_redis_url
from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.home import ProjectHome

SQLITE_YAML = "feature_store.yaml"
REDIS_YAML = "feature_store.redis.yaml"
REDIS_CLUSTER_YAML = "feature_store.redis_cluster.yaml"
RAY_YAML = "feature_store.ray.yaml"
OFFLINE_ENGINE_ENV = "PINFEED_OFFLINE_ENGINE"
OfflineEngine = Literal["local", "ray"]
OFFLINE_ENGINES: tuple[OfflineEngine, ...] = ("local", "ray")


def feast_connection_string(redis_url: str, timeout_s: float | None = None) -> str:
    """A Redis URL (`pinfeed.connection.parse_redis_url`) -> Feast's connection string:
    `host:port,db=N,password=...` for one server, `host1:port1,host2:port2,password=...` for a
    cluster (no `db`: a cluster has database 0 only), with `socket_timeout` /
    `socket_connect_timeout` when `timeout_s` is given (Feast hands every `key=value` to the
    redis client).

    Feast splits its string on commas and `=`, so a password holding a comma cannot be passed.
    """
    target = parse_redis_url(redis_url)
    if any(":" in host for host, _ in target.nodes):
        raise ConfigError(
            "redis_url: Feast's connection string splits host:port on ':', so an IPv6 address "
            "cannot be passed; use a host name"
        )
    parts = [f"{host}:{port}" for host, port in target.nodes]
    if not target.cluster:
        parts.append(f"db={target.db}")
    if target.password:
        if "," in target.password:
            raise ConfigError(
                "redis_url: Feast's connection string cannot carry a password with a comma; "
                "choose another password"
            )
        parts.append(f"password={target.password}")
    if target.username:
        parts.append(f"username={target.username}")
    if target.ssl:
        parts.append("ssl=true")
    if timeout_s is not None:
        parts += [f"socket_timeout={timeout_s:g}", f"socket_connect_timeout={timeout_s:g}"]
        if target.cluster:
            # a client Feast builds itself (the cluster was down when serving connected) must
            # not retry either: redis-py's cluster default retries 3 times with backoff
            parts.append("cluster_error_retry_attempts=0")
    return ",".join(parts)


def offline_engine_from_env(
    explicit: str | None = None, environ: Mapping[str, str] = os.environ
) -> OfflineEngine:
    """`explicit` when given, else `$PINFEED_OFFLINE_ENGINE` when set and non-empty, else
    `local`; anything else is a ConfigError naming the choices."""
    value = explicit or environ.get(OFFLINE_ENGINE_ENV) or "local"
    for engine in OFFLINE_ENGINES:
        if value == engine:
            return engine
    raise ConfigError(
        f"{OFFLINE_ENGINE_ENV}: {value!r} is not an offline engine; pick 'local' (DuckDB on "
        "this machine) or 'ray' (Feast's Ray offline store and compute engine)"
    )


def repo_config(
    home: ProjectHome,
    *,
    redis_url: str | None = None,
    timeout_s: float | None = None,
    engine: OfflineEngine = "local",
) -> RepoConfig:
    """The RepoConfig of `home`'s repo: SQLite from feature_store.yaml, or Redis from
    feature_store.redis.yaml (feature_store.redis_cluster.yaml for a `redis+cluster://` URL)
    with the connection string derived from `redis_url` (socket timeouts of `timeout_s`, if
    given: serving sets them, batch jobs wait). With `engine="ray"`, the offline store and
    batch engine come from feature_store.ray.yaml (one writer on SQLite)."""
    name = SQLITE_YAML
    cluster = bool(redis_url) and parse_redis_url(redis_url).cluster
    if redis_url:
        name = REDIS_CLUSTER_YAML if cluster else REDIS_YAML
    if cluster and not (home.feature_repo / name).exists():
        name = REDIS_YAML  # a home copied before the cluster file existed: same config
    raw = _read_config(
        home.feature_repo / name,
        f"{home.root} is not a pinfeed project home "
        "(it needs feature_repo/ beside data/; set PINFEED_HOME or copy feature_repo/)",
    )
    if redis_url:
        raw["online_store"]["connection_string"] = feast_connection_string(redis_url, timeout_s)
        raw["online_store"]["redis_type"] = "redis_cluster" if cluster else "redis"
    if engine == "ray":
        raw |= _ray_sections(home, sqlite=not redis_url)
    config = RepoConfig(**raw)
    config.repo_path = home.feature_repo
    return config


def _read_config(path: Path, why_missing: str) -> dict[str, Any]:
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing: {why_missing}")
    return yaml.safe_load(path.read_text())


def _ray_sections(home: ProjectHome, *, sqlite: bool) -> dict[str, Any]:
    raw = _read_config(
        home.feature_repo / RAY_YAML,
        "the Ray offline engine reads it; copy it from the checkout's feature_repo/ into the home",
    )
    offline = dict(raw["offline_store"])
    storage = offline.get("storage_path")
    if storage and "://" not in storage and not Path(storage).is_absolute():
        offline["storage_path"] = str((home.feature_repo / storage).resolve())
    engine = dict(raw["batch_engine"])
    if sqlite:
        engine["write_concurrency"] = 1  # SQLite takes one writer at a time
    return {"offline_store": offline, "batch_engine": engine}
