"""What a replica serves, switched atomically: the active pipeline (run + utility weights).

`apply(models)` builds the new pipeline beside the one being served (a new run loads its
artifacts and, when its index holds other pins, its pin cache; new weights only swap the
Scorer), then swaps the reference in one assignment, so a request in flight keeps the pipeline
it started with. A load that fails, for whatever reason, keeps the old pipeline, records why
(`error`, shown by `/healthz`; the reload that asked for it is answered 409 and rolled back)
and re-raises only when there is nothing to keep serving.

Serve calls the Recommender's `reconfigure` with the deployment's `user_config` on every
replica; that method is a thin shell over `apply`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from feast import FeatureStore

from pinfeed.artifacts.runs import load_run
from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.utility import UtilityWeights, default_utility_weights, load_utility_weights
from serving.config import ActiveModels, ServingConfig
from serving.stages.pipeline import Pipeline

logger = logging.getLogger(__name__)


def run_weights(utility_path: Path) -> UtilityWeights:
    """A run's own utility weights (hand-picked when the run has none)."""
    try:
        return load_utility_weights(utility_path)
    except DataNotFoundError:
        return default_utility_weights()


def pipeline_builder(
    config: ServingConfig, connect_store: Callable[[], FeatureStore]
) -> Callable[[ActiveModels, Pipeline | None], Pipeline]:
    """`build(models, current)`: the pipeline serving `models`, reusing what `current` has. A
    new run gets a Feast store of its own (`connect_store`), made on the building thread."""

    def build(models: ActiveModels, current: Pipeline | None) -> Pipeline:
        if current is not None and current.run.run_id == models.run_id:
            weights = models.utility or run_weights(current.run.layout.utility)
            return current.with_weights(weights)
        run = load_run(config.project.artifacts, models.run_id)
        weights = models.utility or run_weights(run.layout.utility)
        cache = current.features.cache if current is not None else None
        return Pipeline(config, connect_store(), run, weights, cache=cache)

    return build


class ActivePipeline:
    """The pipeline a replica serves and the models it was built for."""

    def __init__(self, build: Callable[[ActiveModels, Pipeline | None], Pipeline]) -> None:
        self._build = build
        self.pipeline: Pipeline | None = None
        self.models: ActiveModels | None = None
        self.error: str | None = None

    def apply(self, models: ActiveModels) -> Pipeline:
        """Serve `models`: build beside, then swap; on failure keep the old one (see module)."""
        try:
            pipeline = self._build(models, self.pipeline)
        except Exception as error:  # keep serving whatever broke the new one, and say so
            if self.pipeline is None:
                raise
            self.error = (
                f"switch to run {models.run_id} failed, still serving {self.version}: {error}"
            )
            logger.exception(self.error)
            return self.pipeline
        self.pipeline, self.models, self.error = pipeline, models, None
        return pipeline

    def get(self) -> Pipeline:
        if self.pipeline is None:
            raise ConfigError("no run is active yet: the deployment has no user_config")
        return self.pipeline

    @property
    def version(self) -> str:
        return self.pipeline.version if self.pipeline is not None else "none"
