"""Does the online store hold what serving reads? Checked before deploy, when a replica starts or
switches run, and with every pin cache refresh.

Why: an empty online store does not fail a single read. Every user reads as unknown, so the
app answers 200s of popular pins marked `cold_start` while `/healthz` says ok (issue 14: a
move to a Redis nobody had loaded). So:

- `require_loaded` refuses a deploy when a view of `serving_v1` is empty, naming the command
  that fills it, unless the operator chose `allow_empty_store`;
- a replica that finds an empty view (started anyway, or flushed later) flags every answer
  degraded and `/healthz` reports why;
- `KnownUsers`: cold-start answers for users the offline store knows are counted
  (`pinfeed_cold_known_users_total`), so "every known user is cold" shows at once;
- the age of the newest online value per view is a gauge (`pinfeed_feature_age_seconds`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
from feast import FeatureStore

from feature_repo.freshness import FIX_LOAD, check_views, join_key, offline_source
from feature_repo.store import service_views
from pinfeed.errors import ConfigError
from serving.stages.online import SERVING_SERVICE, STORE_ERRORS

logger = logging.getLogger("ray.serve")
SAMPLE = 16
GATE_TIMEOUT_S = 5.0
USER_VIEW = "user_features"


@dataclass(frozen=True)
class StoreHealth:
    """What a check found: the serving views with no value online and each view's age."""

    empty: tuple[str, ...] = ()
    ages_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the check itself failed (store unreachable): nothing is known
    unchecked: tuple[str, ...] = ()  # views with no offline rows to check against

    @property
    def problem(self) -> str | None:
        """Why answers are degraded, or None."""
        if not self.empty:
            return None
        return f"online store holds no values of {', '.join(self.empty)}: run `{FIX_LOAD}`"


def check_store(store: FeatureStore, sample: int = SAMPLE) -> StoreHealth:
    """One sampled online read per view `serving_v1` reads; ages on the wall clock."""
    now = datetime.now(UTC)
    try:
        views = check_views(store, now, service_views(store, SERVING_SERVICE), sample)
    except STORE_ERRORS as error:
        return StoreHealth(error=f"online store check failed: {error}")
    unchecked = tuple(view.view for view in views if view.verdict == "no offline data")
    empty = tuple(view.view for view in views if view.verdict == "empty")
    ages = {view.view: view.age.total_seconds() for view in views if view.age is not None}
    return StoreHealth(empty=empty, ages_s=ages, unchecked=unchecked)


def require_loaded(store: FeatureStore, allow_empty: bool) -> StoreHealth:
    """The deploy gate: a ConfigError naming the fix when a serving view is empty or the store
    cannot be checked, unless `allow_empty` (then a warning). `store` should wait longer than
    serving's read timeout (`GATE_TIMEOUT_S`): one slow answer must not decide a deploy."""
    health = check_store(store)
    if health.unchecked:
        logger.warning("no offline rows to check the online store against: %s", health.unchecked)
    problem = health.error or health.problem
    if problem and not allow_empty:
        raise ConfigError(
            f"{problem}; not deploying (set allow_empty_store: true, or pass "
            "--allow-empty-store, to start anyway with answers flagged degraded)"
        )
    if problem:
        logger.warning("starting anyway: %s", problem)
    return health


class KnownUsers:
    """The user ids of the offline user features table (sorted), for telling a new user from
    one the online store has lost."""

    def __init__(self, user_ids: np.ndarray) -> None:
        self.ids = np.unique(user_ids.astype(np.int64))

    @classmethod
    def from_store(cls, store: FeatureStore) -> KnownUsers:
        view = store.get_feature_view(USER_VIEW)
        path, _ = offline_source(view)
        if not path.exists():
            return cls(np.empty(0, np.int64))
        column = pq.read_table(path, columns=[join_key(view)]).column(0)
        return cls(column.to_numpy())

    def __contains__(self, user_id: int) -> bool:
        at = int(np.searchsorted(self.ids, user_id))
        return at < len(self.ids) and int(self.ids[at]) == user_id
