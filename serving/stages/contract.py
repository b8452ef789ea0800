"""Serving refuses a run whose models read features the feature services do not provide.

Every source column a manifest names (the towers' dense features, the ranker's dense features,
topic and content) must be a feature of the service the model was trained on (`retrieval_v1`,
`ranking_v1`) under the same full name; a mismatch names the feature and the fix, rather than
serving a model fed the wrong columns.
"""

from __future__ import annotations

from feast import FeatureStore

from feature_repo.store import service_feature_names
from pinfeed.artifacts.layout import RETRIEVAL_MANIFEST
from pinfeed.artifacts.ranker import POSITION
from pinfeed.artifacts.runs import RunArtifacts
from pinfeed.errors import ConfigError
from serving.stages.online import RANKING_SERVICE, RETRIEVAL_SERVICE


def _check(manifest: str, columns: dict[str, str], service: str, provided: set[str]) -> None:
    for feature, column in columns.items():
        if column != POSITION and column not in provided:
            raise ConfigError(
                f"{manifest}: feature {feature!r} reads {column!r}, which feature service "
                f"{service} does not provide; retrain against the current service or restore it"
            )


def check_against_services(run: RunArtifacts, store: FeatureStore) -> None:
    """Raise ConfigError if a model of `run` reads a column its feature service lacks."""
    retrieval = set(service_feature_names(store, RETRIEVAL_SERVICE))
    ranking = set(service_feature_names(store, RANKING_SERVICE))
    where = str(run.layout.retrieval / RETRIEVAL_MANIFEST)
    for tower in (run.retrieval.query_tower, run.retrieval.pin_tower):
        _check(where, tower.source_columns, RETRIEVAL_SERVICE, retrieval)
    _check(str(run.layout.ranker_manifest), run.ranker.source_columns, RANKING_SERVICE, ranking)
