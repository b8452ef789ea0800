"""Is the online store fresh? A per-view check that reads the store itself, not the registry.

For each online feature view: the newest row of its offline table, the store's `LoadMark`
(`feature_repo.load_ledger`), and a sample of entity keys (those with the newest offline rows)
read back from the online store with their event timestamps. The verdict:

- `empty`: none of the sampled keys has a value online (never loaded, or flushed);
- `stale`: the offline table has rows the store lacks (appended since the last load, a sampled
  key whose online value is older than its newest offline row), or the newest online value is
  older than the view's ttl at `as_of`;
- `fresh`: otherwise.

`as_of` is the clock staleness is measured on: the caller's (`pinfeed features status`
defaults to the end of the event data, the clock of a replayed data set; serving uses now).
Sampling keeps the check to one online read per view whatever the store's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, FileSource
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from feature_repo.load_ledger import LoadMark, open_ledger
from pinfeed.errors import ConfigError

Verdict = Literal["fresh", "stale", "empty", "no offline data"]
SAMPLE = 64
FIX_LOAD = "pinfeed features materialize"
FIX_FULL = "pinfeed features materialize --full"
FIX_BUILD = "pinfeed features build && pinfeed features materialize"


@dataclass(frozen=True)
class OfflineKeys:
    """A view's offline table, reduced to what the check needs."""

    newest: datetime | None  # newest row's event timestamp
    keys: tuple[int, ...]  # sampled entity keys, those with the newest rows first
    key_newest: tuple[datetime, ...]  # each sampled key's newest offline timestamp


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    ttl: timedelta | None
    offline_newest: datetime | None
    mark: LoadMark | None
    sampled: int
    present: int  # sampled keys with a value online
    lagging: int  # present keys whose online value is older than their newest offline row
    online_newest: datetime | None
    as_of: datetime
    verdict: Verdict
    reason: str
    fix: str | None

    @property
    def age(self) -> timedelta | None:
        """How old the newest online value is at `as_of`."""
        return None if self.online_newest is None else self.as_of - self.online_newest


def check_views(
    store: FeatureStore,
    as_of: datetime,
    views: Sequence[str] | None = None,
    sample: int = SAMPLE,
) -> list[ViewFreshness]:
    """The freshness of `views` (default: every online view) in `store`'s online store."""
    marks = open_ledger(store).read()
    chosen = [
        view
        for view in store.list_feature_views()
        if view.online and (views is None or view.name in views)
    ]
    return [_check(store, view, marks.get(view.name), as_of, sample) for view in chosen]


def offline_keys(
    view: FeatureView, sample: int = SAMPLE, until: datetime | None = None
) -> OfflineKeys:
    """The newest timestamp of `view`'s offline table and its `sample` most recent keys (of the
    rows up to `until`, when given)."""
    path, stamp = offline_source(view)
    if not path.exists():
        return OfflineKeys(None, (), ())
    key = join_key(view)
    table = pq.read_table(path, columns=[key, stamp])
    if until is not None:
        bound = pa.scalar(until.astimezone(UTC), type=table.schema.field(stamp).type)
        table = table.filter(pc.less_equal(table[stamp], bound))
    if table.num_rows == 0:
        return OfflineKeys(None, (), ())
    latest = table.group_by(key).aggregate([(stamp, "max")])
    order = pc.sort_indices(latest, sort_keys=[(f"{stamp}_max", "descending"), (key, "ascending")])
    top = latest.take(order[:sample])
    return OfflineKeys(
        newest=_utc(pc.max(table[stamp]).as_py()),
        keys=tuple(top[key].to_pylist()),
        key_newest=tuple(_utc(ts) for ts in top[f"{stamp}_max"].to_pylist()),
    )


@dataclass(frozen=True)
class OfflineStamps:
    """The event timestamps of a view's offline table (None: the table is missing)."""

    stamps: pa.ChunkedArray | None

    @classmethod
    def read(cls, view: FeatureView) -> OfflineStamps:
        path, stamp = offline_source(view)
        return cls(pq.read_table(path, columns=[stamp])[0] if path.exists() else None)

    @property
    def rows(self) -> int:
        """Rows with a timestamp (what `rows_through` counts)."""
        return 0 if self.stamps is None else int(pc.count(self.stamps).as_py())

    @property
    def newest(self) -> datetime | None:
        newest = None if self.stamps is None else pc.max(self.stamps).as_py()
        return None if newest is None else _utc(newest)

    def rows_through(self, moment: datetime) -> int:
        """Rows stamped at or before `moment`."""
        if self.stamps is None:
            return 0
        return int(pc.sum(pc.less_equal(self.stamps, self._scalar(moment))).as_py() or 0)

    def first_from(self, moment: datetime) -> datetime | None:
        """The oldest timestamp at or after `moment`."""
        if self.stamps is None:
            return None
        later = pc.filter(self.stamps, pc.greater_equal(self.stamps, self._scalar(moment)))
        first = pc.min(later).as_py()
        return None if first is None else _utc(first)

    def _scalar(self, moment: datetime) -> pa.Scalar:
        assert self.stamps is not None
        return pa.scalar(moment.astimezone(UTC), type=self.stamps.type)


def holds_values(
    store: FeatureStore, view: FeatureView, since: datetime, until: datetime, sample: int = 16
) -> bool:
    """Whether any of `sample` keys whose newest offline row (up to `until`) lies in
    [`since`, `until`], the rows the last load covered, has a value online. No such key counts
    as held: nothing loaded could have been lost."""
    offline = offline_keys(view, sample, until=until)
    keys = [
        key for key, newest in zip(offline.keys, offline.key_newest, strict=True) if newest >= since
    ]
    return not keys or any(stamp is not None for stamp in read_online_stamps(store, view, keys))


def offline_source(view: FeatureView) -> tuple[Path, str]:
    """The parquet file of `view`'s offline rows and its timestamp column."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise ConfigError(f"feature view {view.name}: its offline source is not a parquet file")
    return Path(source.path), source.timestamp_field


def join_key(view: FeatureView) -> str:
    """The view's one join key (every pinfeed view has exactly one)."""
    return view.entity_columns[0].name


def read_online_stamps(
    store: FeatureStore, view: FeatureView, keys: Sequence[int]
) -> list[datetime | None]:
    """Each key's event timestamp in the online store (None: no value), in one online read.

    Goes below `get_online_features`, which drops the timestamps, to the provider's
    `online_read` (the same call Feast's SDK makes per view)."""
    if not keys:
        return []
    name = join_key(view)
    entity_keys = [EntityKey(join_keys=[name], entity_values=[Value(int64_val=k)]) for k in keys]
    rows = store._get_provider().online_read(
        config=store.config, table=view, entity_keys=entity_keys
    )
    return [_utc(stamp) if _held(stamp, values) else None for stamp, values in rows]


def _held(stamp: datetime | None, values: dict[str, Value] | None) -> bool:
    """Whether an online_read row holds a value: Redis answers a missing key with the epoch
    and unset values rather than None."""
    if stamp is None or not values:
        return False
    return any(value.WhichOneof("val") is not None for value in values.values())


@dataclass(frozen=True)
class ReadBack:
    """A view's sampled keys read back from the online store."""

    sampled: int
    present: int  # keys with a value online
    lagging: int  # present keys older online than their newest offline row (up to as_of)
    missing: int  # absent keys whose newest offline row is still valid at as_of
    online_newest: datetime | None


def _check(
    store: FeatureStore, view: FeatureView, mark: LoadMark | None, as_of: datetime, sample: int
) -> ViewFreshness:
    offline = offline_keys(view, sample)
    ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
    read = _read_back(store, view, offline, as_of, ttl)
    rewritten = (
        mark is not None
        and mark.offline_rows >= 0
        and OfflineStamps.read(view).rows_through(mark.offline_newest) != mark.offline_rows
    )
    verdict, reason, fix = _verdict(offline.newest, rewritten, mark, read, ttl, as_of)
    return ViewFreshness(
        view=view.name,
        ttl=ttl,
        offline_newest=offline.newest,
        mark=mark,
        sampled=read.sampled,
        present=read.present,
        lagging=read.lagging,
        online_newest=read.online_newest,
        as_of=as_of,
        verdict=verdict,
        reason=reason,
        fix=fix,
    )


def _read_back(
    store: FeatureStore,
    view: FeatureView,
    offline: OfflineKeys,
    as_of: datetime,
    ttl: timedelta | None,
) -> ReadBack:
    stamps = read_online_stamps(store, view, offline.keys)
    pairs = list(zip(stamps, offline.key_newest, strict=True))
    present = [(stamp, newest) for stamp, newest in pairs if stamp is not None]
    valid_from = as_of - ttl if ttl is not None else None
    missing = sum(
        1
        for stamp, newest in pairs
        if stamp is None and newest <= as_of and (valid_from is None or newest >= valid_from)
    )
    return ReadBack(
        sampled=len(pairs),
        present=len(present),
        lagging=sum(1 for stamp, newest in present if stamp < newest <= as_of),
        missing=missing,
        online_newest=max((stamp for stamp, _ in present), default=None),
    )


def _verdict(
    offline_newest: datetime | None,
    rewritten: bool,
    mark: LoadMark | None,
    read: ReadBack,
    ttl: timedelta | None,
    as_of: datetime,
) -> tuple[Verdict, str, str | None]:
    if offline_newest is None:
        return "no offline data", "the offline table is missing or empty", FIX_BUILD
    if read.present == 0:
        return "empty", f"none of {read.sampled} sampled keys has a value online", FIX_LOAD
    if mark is not None and offline_newest > mark.offline_newest:
        return "stale", f"offline rows up to {offline_newest:%Y-%m-%d %H:%M} not loaded", FIX_LOAD
    if rewritten:
        return "stale", "the offline table was rewritten since the last load", FIX_LOAD
    if read.lagging:
        fix = FIX_FULL if mark is not None and mark.loaded_until >= offline_newest else FIX_LOAD
        return "stale", f"{read.lagging} of {read.present} sampled keys are older online", fix
    if ttl is not None and read.online_newest is not None and as_of - read.online_newest > ttl:
        return "stale", f"newest online value is older than the ttl ({ttl})", FIX_BUILD
    if read.missing:
        return "stale", f"{read.missing} of {read.sampled} sampled keys missing online", FIX_LOAD
    return "fresh", "sampled keys match the newest offline rows", None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
