"""The one place pinfeed talks to Feast's Python API (a Feast upgrade touches this file).

Which config a store opens (online flavour: SQLite, Redis, Redis Cluster; offline engine:
local DuckDB or Feast's Ray engine) is `feature_repo.flavours`.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field
from feast.data_source import DataSource, PushMode
from feast.errors import FeastObjectNotFoundException
from feast.type_map import feast_value_type_to_pa

from feature_repo.flavours import OfflineEngine, offline_engine_from_env, repo_config
from feature_repo.freshness import OfflineStamps, holds_values
from feature_repo.load_ledger import LoadMark, new_mark, open_ledger
from pinfeed.connection import redis_url_from_env
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError
from pinfeed.home import ProjectHome

DEFINITIONS = "definitions.py"
RAY_ENGINE_MARGIN = timedelta(minutes=10)
REWARD_PUSH_SOURCE = "cluster_reward_push"
REWARD_COLUMNS = (
    "cluster_id",
    "event_timestamp",
    "reward_impressions",
    "reward_engagements",
    "reward",
    "reward_has_data",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FEAST_TYPES = (Entity, DataSource, FeatureView, FeatureService)


def open_store(
    home: ProjectHome,
    *,
    redis_url: str | None = None,
    timeout_s: float | None = None,
    engine: OfflineEngine | None = None,
) -> FeatureStore:
    """A FeatureStore over `home`: Redis when `redis_url` (or the REDIS_URL variable) is set,
    else SQLite; the offline engine `engine` (or PINFEED_OFFLINE_ENGINE), else local DuckDB.
    Creates `<home>/data/feast/` for the registry and the SQLite file."""
    redis_url = redis_url_from_env(redis_url)
    config = repo_config(
        home, redis_url=redis_url, timeout_s=timeout_s, engine=offline_engine_from_env(engine)
    )
    home.feast.mkdir(parents=True, exist_ok=True)
    # ibis (under Feast's DuckDB offline store) warns on every query about its own API; Feast's
    # import puts `simplefilter("once", DeprecationWarning)` first, so the filter goes here.
    warnings.filterwarnings("ignore", message=".*fetch_arrow_table.*", category=DeprecationWarning)
    return FeatureStore(repo_path=str(home.feature_repo), config=config)


def repo_objects(repo: Path) -> list[Any]:
    """The Feast objects defined in `repo`/definitions.py, in definition order.

    Loaded from the file rather than imported as `feature_repo.definitions`, so the sources
    point at the data beside that repo (a temporary project home, not the checkout)."""
    path = repo / DEFINITIONS
    if not path.exists():
        raise DataNotFoundError(f"{path} is missing: copy feature_repo/ into the project home")
    spec = importlib.util.spec_from_file_location(f"_pinfeed_definitions_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise DataNotFoundError(f"{path} cannot be loaded as a Python module")
    definitions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(definitions)
    objects: list[Any] = []
    for value in vars(definitions).values():
        if isinstance(value, _FEAST_TYPES) and not any(value is seen for seen in objects):
            objects.append(value)
    return objects


def apply_definitions(store: FeatureStore) -> None:
    """Register the repo's definitions and create their online tables, like `feast apply`:
    objects that are no longer defined are removed from the registry."""
    objects = repo_objects(Path(store.config.repo_path))
    keep = {(type(obj).__name__, obj.name) for obj in objects}
    stale: list[Any] = [
        *store.list_feature_services(),
        *store.list_feature_views(),
        *store.list_data_sources(),
        *store.list_entities(),
    ]
    stale = [obj for obj in stale if (type(obj).__name__, obj.name) not in keep]
    store.apply(objects, objects_to_delete=stale, partial=False)


@dataclass(frozen=True)
class LoadWindow:
    """One view's window loaded by `materialize`; `start is None`: nothing new to load."""

    view: str
    start: datetime | None
    end: datetime
    why: str  # first load | full | since | new rows | rewritten | values lost | up to date


def materialize(
    store: FeatureStore,
    end: datetime,
    start: datetime | None = None,
    views: Sequence[str] | None = None,
    *,
    full: bool = False,
) -> list[LoadWindow]:
    """Load the latest feature values up to `end` into `store`'s online store; the windows.

    `views` limits the load to those feature views (the reward job reloads only
    cluster_reward); default: every online view. With `start`, each view is loaded from
    [start, end] ("since"). Otherwise the load is incremental against what *this* online store
    holds (`feature_repo.load_ledger`, not the registry the SQLite and Redis configs share):

    - a view the store never held ("first load"), every view with `full`, a view whose offline
      table was rewritten before its newest loaded row ("rewritten", its older part changed
      size) or whose sampled keys read back empty ("values lost") is loaded from `end - ttl`
      (the oldest value still valid at `end`; the epoch for static views), rather than Feast's
      `now - ttl`, so a data set stamped in the past loads the same way whenever it runs;
    - a loaded view resumes just after its newest loaded row ("new rows"), or is skipped when
      nothing came since ("up to date").

    Writes are upserts, so a window loaded twice changes nothing.
    """
    end = _utc(end, "end")
    since = _utc(start, "start") if start is not None else None
    ledger = open_ledger(store)
    marks = ledger.read()
    online = [view for view in store.list_feature_views() if view.online]
    chosen = [view for view in online if views is None or view.name in views]
    windows: list[LoadWindow] = []
    for view in chosen:
        mark = marks.get(view.name)
        stamps = OfflineStamps.read(view)
        window = _window(store, view, mark, stamps, end, since, full)
        _check_engine_window(store, view, window, stamps)
        windows.append(window)
        if window.start is None:
            continue
        store.materialize(start_date=window.start, end_date=end, feature_views=[view.name])
        if _contiguous(view, mark, window, stamps):
            loaded_until = max(end, mark.loaded_until) if mark and window.why == "since" else end
            newest = stamps.newest or EPOCH
            ledger.write([new_mark(view.name, loaded_until, newest, stamps.rows)])
    return windows


def _check_engine_window(
    store: FeatureStore, view: FeatureView, window: LoadWindow, stamps: OfflineStamps
) -> None:
    """Feast's Ray compute engine keeps only rows stamped at or after `now - ttl`, whatever
    the window (feast/infra/compute_engines/ray/nodes.py, Feast 0.67): a window holding older
    rows would load silently incomplete, so it is refused before anything is written."""
    if window.start is None or store.config.batch_engine.type != "ray.engine":
        return
    if view.ttl is None or view.ttl <= timedelta(0):
        return
    # Feast takes its own `now` later, during the load: rows within a margin of the horizon
    # would fall out while it runs
    horizon = datetime.now(UTC) - view.ttl + RAY_ENGINE_MARGIN
    first = stamps.first_from(window.start)
    if first is not None and first < horizon and first <= window.end:
        raise ConfigError(
            f"materialise {view.name}: its window holds rows from {first:%Y-%m-%d %H:%M}, but "
            f"Feast's Ray engine drops rows stamped before now - ttl ({horizon:%Y-%m-%d %H:%M}); "
            "load past data with PINFEED_OFFLINE_ENGINE=local"
        )


def _window(
    store: FeatureStore,
    view: FeatureView,
    mark: LoadMark | None,
    stamps: OfflineStamps,
    end: datetime,
    since: datetime | None,
    full: bool,
) -> LoadWindow:
    """The window `materialize` loads for `view` (see its docstring for the rules)."""
    first = _first_start(view, end)
    if since is not None:
        return _bounded(view.name, since, end, "since")
    if full:
        return _bounded(view.name, first, end, "full")
    if mark is None:
        return _bounded(view.name, first, end, "first load")
    if _rewritten(mark, stamps):
        return _bounded(view.name, first, end, "rewritten")
    if not holds_values(store, view, _first_start(view, mark.loaded_until), mark.loaded_until):
        return _bounded(view.name, first, end, "values lost")
    newest = stamps.newest
    appended = newest is not None and newest > mark.offline_newest
    unloaded = mark.offline_newest > mark.loaded_until and end > mark.loaded_until
    if not (appended or unloaded):
        return LoadWindow(view.name, None, end, "up to date")
    return _bounded(view.name, mark.resume_at, end, "new rows")


def _bounded(view: str, start: datetime, end: datetime, why: str) -> LoadWindow:
    return (
        LoadWindow(view, start, end, why)
        if start < end
        else LoadWindow(view, None, end, "up to date")
    )


def _contiguous(
    view: FeatureView, mark: LoadMark | None, window: LoadWindow, stamps: OfflineStamps
) -> bool:
    """Whether the store now holds every row up to the window's end, so the mark may move: a
    `--since` window that starts after the oldest row not loaded yet leaves a gap."""
    if window.why != "since" or window.start is None:
        return True
    if mark is None or _rewritten(mark, stamps):
        return window.start <= _first_start(view, window.end)
    first_unloaded = stamps.first_from(mark.resume_at)
    return first_unloaded is None or window.start <= first_unloaded


def _rewritten(mark: LoadMark, stamps: OfflineStamps) -> bool:
    """Whether the part of the table the mark covers changed size since (rows added or removed
    in the past)."""
    return mark.offline_rows >= 0 and stamps.rows_through(mark.offline_newest) != mark.offline_rows


def _first_start(view: FeatureView, end: datetime) -> datetime:
    if view.ttl is None or view.ttl <= timedelta(0):
        return EPOCH
    return end - view.ttl


def push_cluster_rewards(store: FeatureStore, rows: pd.DataFrame) -> None:
    """Write realtime reward updates to the online store through the cluster_reward push source.

    rows: one row per cluster with `REWARD_COLUMNS` (a `user_id` column is accepted and dropped).
    The next online read sees them. The offline table is left to the batch reward job, which
    recomputes rewards from the logs, so training never sees values that were only pushed.
    """
    missing = [column for column in REWARD_COLUMNS if column not in rows.columns]
    if missing:
        raise SchemaError(
            f"cluster reward push: missing column(s) {missing}; expected {list(REWARD_COLUMNS)}"
        )
    frame = rows.loc[:, list(REWARD_COLUMNS)].copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    store.push(REWARD_PUSH_SOURCE, frame, to=PushMode.ONLINE)


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    """The registered feature service `name`, or a ConfigError naming the command to run."""
    try:
        return store.get_feature_service(name)
    except FeastObjectNotFoundException as exc:
        raise ConfigError(
            f"feature service {name!r} is not registered: run `pinfeed features apply`"
        ) from exc


def _service_features(store: FeatureStore, name: str) -> Iterator[tuple[str, Field]]:
    """(full name `view__feature`, field) of every feature of service `name`, in its order."""
    for projection in feature_service(store, name).feature_view_projections:
        for feature in projection.features:
            yield f"{projection.name_to_use()}__{feature.name}", feature


def feature_types(store: FeatureStore, service: str) -> dict[str, pa.DataType]:
    """Each feature of `service` (full name) -> the Arrow type its Feast dtype declares."""
    return {
        name: feast_value_type_to_pa(feature.dtype.to_value_type())
        for name, feature in _service_features(store, service)
    }


def service_feature_names(store: FeatureStore, name: str) -> tuple[str, ...]:
    """Every feature of service `name` under its full name (`view__feature`), in the service's
    order: the columns a training set and a full-name online read hold."""
    return tuple(full_name for full_name, _ in _service_features(store, name))


def service_views(store: FeatureStore, name: str) -> tuple[str, ...]:
    """The feature views service `name` reads (a view projected twice counts once)."""
    views = [
        projection.name for projection in feature_service(store, name).feature_view_projections
    ]
    return tuple(dict.fromkeys(views))


def online_features(
    store: FeatureStore,
    service: str,
    entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
) -> dict[str, list[Any]]:
    """Online lookup of a feature service's features.

    entity_rows: one mapping per row (`[{"user_id": 1, "pin_id": 7, "query_pin_id": 3}]`) or
    columns (`{"user_id": [...], "pin_id": [...]}`); rows must carry every join key the service
    reads. Returns columns keyed by full feature name (`pin_features__pin_click_rate_30d`) plus the
    join keys, one value per row; missing values are None.
    """
    response = store.get_online_features(
        features=feature_service(store, service),
        entity_rows=entity_rows,  # type: ignore[arg-type]
        full_feature_names=True,
    )
    return response.to_dict()


def online_feature_values(
    store: FeatureStore,
    features: Sequence[str],
    entity_rows: Sequence[Mapping[str, Any]],
    *,
    full_feature_names: bool = False,
) -> dict[str, list[Any]]:
    """Online lookup of individual features (`"view:feature"`), keyed by short feature name
    (or `view__feature` with `full_feature_names`); for readers that need some columns of a
    few views rather than a whole feature service."""
    response = store.get_online_features(
        features=list(features),
        entity_rows=list(entity_rows),
        full_feature_names=full_feature_names,
    )
    return response.to_dict()


def _utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ConfigError(f"{name}: {moment} has no time zone; pass an aware UTC datetime")
    return moment.astimezone(UTC)
