"""The data of the retrieval ablation: a time split of the retrieval training set.

Time split at `cutoff = end - holdout_days` (end: the last example's event_timestamp):

- train: positives whose label was known before the cutoff (`positive_ts < cutoff`); a
  conversion that arrives after the cutoff for an impression before it is in neither part,
  as it would be in production (delayed labels).
- held out: positives recommended at or after the cutoff (`event_timestamp >= cutoff`),
  their query features read point-in-time at that moment (the training set's Feast join).
  Held-out conversions are the target; held-out long clicks (dwell >= the event set's
  long-click threshold) the secondary one.
- corpus: every pin, with its dense features as of the cutoff (no held-out day leaks in).

`prepare_event_home` turns any event set in the schema (generated or imported) into a
temporary project home with features and the retrieval training set, for `--events DIR`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_repo.homes import DEFAULT_PROJECT, create_home
from pinfeed.events import read_event_meta, read_event_set
from pinfeed.home import ProjectHome
from training.retrieval.corpus import PinCorpus, read_pin_corpus
from training.retrieval.dataset import known_user_ids, read_training_set
from training.training_sets import RETRIEVAL_NAME


@dataclass(frozen=True)
class RetrievalSplit:
    """Train rows, held-out targets and the corpus of one time split."""

    train: pa.Table
    conversions: pa.Table
    long_clicks: pa.Table
    corpus: PinCorpus
    user_ids: np.ndarray
    cutoff: datetime
    long_click_threshold_s: float


def _timestamp(value: datetime) -> pa.Scalar:
    return pa.scalar(value, pa.timestamp("us", tz="UTC"))


def time_split(home: ProjectHome, events: Path, holdout_days: float) -> RetrievalSplit:
    """Split `home`'s retrieval training set at `end - holdout_days` (see module docstring)."""
    table = read_training_set(home.training_sets / f"{RETRIEVAL_NAME}.parquet")
    end = pc.max(table.column("event_timestamp")).as_py()
    cutoff = end - timedelta(days=holdout_days)
    threshold = read_event_meta(events).long_click_threshold_s
    train = table.filter(pc.less(table.column("positive_ts"), _timestamp(cutoff)))
    held = table.filter(pc.greater_equal(table.column("event_timestamp"), _timestamp(cutoff)))
    kind = held.column("positive_kind")
    long_click = pc.and_(
        pc.equal(kind, "click"), pc.greater_equal(held.column("click_dwell_s"), threshold)
    )
    return RetrievalSplit(
        train=train,
        conversions=held.filter(pc.equal(kind, "conversion")),
        long_clicks=held.filter(pc.fill_null(long_click, False)),
        corpus=read_pin_corpus(home.features, as_of=cutoff),
        user_ids=known_user_ids(events / "users.parquet", table),
        cutoff=cutoff,
        long_click_threshold_s=threshold,
    )


def validation_split(split: RetrievalSplit, days: float) -> tuple[pa.Table, pa.Table]:
    """(fit rows, validation targets) inside the train part, for early stopping: the same
    rule one level down, at `cutoff - days`. Fit rows: labels known before it; targets:
    conversions and long clicks recommended at or after it (known before the cutoff), so the
    test days are never looked at."""
    at = _timestamp(split.cutoff - timedelta(days=days))
    train = split.train
    fit = train.filter(pc.less(train.column("positive_ts"), at))
    later = train.filter(pc.greater_equal(train.column("event_timestamp"), at))
    kind = later.column("positive_kind")
    long_click = pc.and_(
        pc.equal(kind, "click"),
        pc.greater_equal(later.column("click_dwell_s"), split.long_click_threshold_s),
    )
    targets = later.filter(pc.fill_null(pc.or_(pc.equal(kind, "conversion"), long_click), False))
    return fit, targets


def prepare_event_home(events: Path, root: Path) -> ProjectHome:
    """A project home under `root` with `events`' feature tables and retrieval training set.

    Copies the Feast repo, builds the features, applies the definitions (SQLite) and joins the
    training set point-in-time, like `pinfeed run` without generation or materialisation.
    """
    from feature_repo.pipeline import build_features
    from feature_repo.store import apply_definitions, open_store
    from training.training_sets import TrainingSetConfig, build_retrieval_set

    event_set = read_event_set(events)
    home = create_home(root, project=DEFAULT_PROJECT)
    build_features(event_set, home.features, progress=False)
    store = open_store(home, redis_url=None)
    apply_definitions(store)
    build_retrieval_set(store, event_set, home.training_sets, TrainingSetConfig())
    return home
