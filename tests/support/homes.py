"""Isolated project homes for the tests, built by the product's own steps.

- `make_home`: an empty home (a copy of feature_repo/ with a Feast project of its own, since
  tests share one Redis database);
- `data_home`: a tiny world through `pinfeed run`'s data steps (events, features, online store,
  training sets);
- `shared_serving_home`: one per test session, a data home plus run `RUN_ID` with both models
  trained for a few steps (`training.quick`) and a second run `RUN_ID_B` (a ranker trained for
  more steps: another hash, another version) for reload tests.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

from rich.console import Console

from feature_repo.homes import create_home
from feature_repo.pipeline.clusters import users_with_clusters as _users_with_clusters
from pinfeed.home import ProjectHome
from pinfeed_cli.pipeline import run_pipeline
from tests.support.redis import PROJECT_PREFIX
from training.quick import quick_run

RUN_ID = "tiny-run"
RUN_ID_B = "tiny-run-b"
RETRIEVAL_WORLD = {"users": 300, "pins": 600, "topics": 20, "days": 6}
"""A few thousand positives, about a hundred conversions: built in a few seconds."""
SERVING_WORLD = {"users": 200, "pins": 1500, "topics": 20, "days": 5}


def make_home(root: Path) -> ProjectHome:
    """An empty home whose Feast project is this session's own (`PROJECT_PREFIX`)."""
    return create_home(root, project=f"{PROJECT_PREFIX}{uuid.uuid4().hex[:8]}")


def data_home(root: Path, world: dict[str, int], seed: int = 3) -> ProjectHome:
    """`pinfeed run` up to the training sets on a tiny world (output kept quiet)."""
    home = make_home(root)
    run_pipeline(
        home,
        seed=seed,
        console=Console(file=io.StringIO()),
        generator_overrides=world,
        stop_after="training sets",
    )
    return home


def build_tiny_home(root: Path) -> ProjectHome:
    """The retrieval tests' world."""
    return data_home(root, RETRIEVAL_WORLD)


def build_serving_home(root: Path) -> ProjectHome:
    home = data_home(root, SERVING_WORLD, seed=5)
    quick_run(home, RUN_ID)
    quick_run(home, RUN_ID_B, ranking_steps=40, seed=1)
    return home


def shared_serving_home(base: Path) -> ProjectHome:
    """One serving home per test session, built at `base`/serving-home on first use (the
    serving test modules each give their app its own state_dir)."""
    root = base / "serving-home"
    done = root / "artifacts" / RUN_ID_B / "ranking" / "ranker.manifest.json"
    if done.is_file():
        return ProjectHome(root.resolve())
    root.mkdir(parents=True, exist_ok=True)
    return build_serving_home(root)


def users_with_clusters(home: ProjectHome, minimum: int = 2) -> list[int]:
    """Users whose latest clustering has at least `minimum` clusters."""
    return _users_with_clusters(home.features, minimum)
