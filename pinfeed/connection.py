"""The one switch to Redis: `REDIS_URL`.

Every part that can keep state in Redis (the Feast online store, the feedback log, the served
log, the credit ledger) asks `redis_url_from_env` for its URL, so setting `REDIS_URL` moves all
of them together and unsetting it moves all of them back (SQLite and local files). An explicit
URL (a serve config's `redis_url`, a test) wins over the variable. The URL carries the password
(`redis://:secret@host:6379/0`), so it is read from the environment of the process that
connects and never written into a config, a log line or a Serve app's stored args.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

REDIS_URL_ENV = "REDIS_URL"


def redis_url_from_env(
    explicit: str | None = None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """`explicit` when given, else `$REDIS_URL` when set and non-empty, else None (SQLite)."""
    return explicit or environ.get(REDIS_URL_ENV) or None
