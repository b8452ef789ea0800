"""Serving refuses a run whose models read features the feature services do not provide.

Every source column a manifest names must be a feature of the service the model was trained on
(`retrieval_v1`, `ranking_v1`) under the same full name, and every column serving itself reads
for a model at request time (the query tower's user features; the ranker's dense features,
topic and content) must be in `serving_v1` too. A mismatch names the feature and the fix,
rather than serving a model fed a missing column as NaN.
"""

from __future__ import annotations

from collections.abc import Iterable

from feast import FeatureStore

from feature_repo.store import service_feature_names
from pinfeed.artifacts.ranker import POSITION
from pinfeed.artifacts.runs import RunArtifacts
from pinfeed.errors import ConfigError
from serving.stages.online import RANKING_SERVICE, RETRIEVAL_SERVICE, SERVING_SERVICE

QUERY_PIN_PROJECTION = "query_pin_content__"
"""Serving reads the query pin's content from its pin cache, not through this projection."""


def _check(
    manifest: str, columns: Iterable[tuple[str, str]], service: str, names: set[str]
) -> None:
    for feature, column in columns:
        if column != POSITION and column not in names:
            raise ConfigError(
                f"{manifest}: feature {feature!r} reads {column!r}, which feature service "
                f"{service} does not provide; retrain against the current service or restore it"
            )


def check_against_services(run: RunArtifacts, store: FeatureStore) -> None:
    """Raise ConfigError if a model of `run` reads a column its feature services lack."""
    retrieval = set(service_feature_names(store, RETRIEVAL_SERVICE))
    ranking = set(service_feature_names(store, RANKING_SERVICE))
    serving = set(service_feature_names(store, SERVING_SERVICE))
    towers = str(run.layout.retrieval_manifest)
    ranker = str(run.layout.ranker_manifest)
    query, pin = run.retrieval.query_tower, run.retrieval.pin_tower
    ranked = run.ranker.source_columns.items()
    _check(
        towers,
        [*query.source_columns.items(), *pin.source_columns.items()],
        RETRIEVAL_SERVICE,
        retrieval,
    )
    _check(ranker, ranked, RANKING_SERVICE, ranking)
    read_online = [
        *query.source_columns.items(),
        *((f, c) for f, c in ranked if not c.startswith(QUERY_PIN_PROJECTION)),
    ]
    _check(f"{towers} / {ranker}", read_online, SERVING_SERVICE, serving)
