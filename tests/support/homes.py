"""Isolated project homes for the tests, built by the product's own steps.

- `make_home`: an empty home (a copy of feature_repo/ with a Feast project of its own, since
  tests share one Redis database);
- `data_home`: a tiny world through `pinfeed run`'s data steps (events, features, online store,
  training sets); `build_tiny_home` (retrieval) and `build_ranking_home` name the tests' worlds;
- `shared_serving_home`: one per test session, a data home plus run `RUN_ID` with both models
  trained for a few steps (`training.quick`) and a second run `RUN_ID_B` (a ranker trained for
  more steps: another hash, another version) for reload tests;
- `load_redis`: a home's features loaded into a Redis online store;
- `copy_home`: a private copy of a home, for tests that change its data or online store;
- `edited_run`: a copy of a run changed on disk (a broken run for the refusal tests).
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from feature_repo.homes import create_home
from feature_repo.pipeline.clusters import users_with_clusters as _users_with_clusters
from feature_repo.store import materialize, open_store
from pinfeed.events import read_event_set
from pinfeed.home import ProjectHome
from pinfeed_cli import steps
from pinfeed_cli.pipeline import run_pipeline
from tests.support.redis import PROJECT_PREFIX
from training.quick import quick_run

RUN_ID = "tiny-run"
RUN_ID_B = "tiny-run-b"
RETRIEVAL_WORLD = {"users": 300, "pins": 600, "topics": 20, "days": 6}
"""A few thousand positives, about a hundred conversions: built in a few seconds."""
SERVING_WORLD = {"users": 200, "pins": 1500, "topics": 20, "days": 5}
RANKING_WORLD = {"users": 300, "pins": 1200, "topics": 20, "days": 7}
"""Seven days: training rows, one validation day and two test days of impressions."""


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


def build_ranking_home(root: Path) -> ProjectHome:
    """The ranking evaluation and search tests' world."""
    return data_home(root, RANKING_WORLD, seed=4)


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


def load_redis(home: ProjectHome, url: str) -> None:
    """Materialise every view into the Redis online store at `url`: the home's SQLite store was
    loaded already through the same registry, and a Redis never loaded still gets everything."""
    end = read_event_set(home.events).meta.end + timedelta(days=1)
    windows = materialize(open_store(home, redis_url=url), end=end)
    assert all(window.start is not None for window in windows), windows


def users_with_clusters(home: ProjectHome, minimum: int = 2) -> list[int]:
    """Users whose latest clustering has at least `minimum` clusters."""
    return _users_with_clusters(home.features, minimum)


def copy_home(source: ProjectHome, root: Path) -> ProjectHome:
    """A copy of `source` at `root` whose registry points at the copy's own tables (it holds
    absolute source paths), so the copy's data and online store change without touching
    `source`."""
    shutil.copytree(source.root, root)
    home = ProjectHome(root.resolve())
    steps.apply(home)
    return home


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the JSON file at `path` after `edit` changed its object in place."""
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document, indent=2))


@contextmanager
def edited_run(
    home: ProjectHome, name: str, edit: Callable[[Path], None], source: str = RUN_ID
) -> Iterator[str]:
    """Run `name`: a copy of run `source` that `edit(run folder)` changed, removed on exit.
    It keeps `source`'s creation time, older than `RUN_ID_B`'s, so it does not become the
    home's `latest` run while `RUN_ID_B` is there."""
    root = home.artifacts / name
    shutil.copytree(home.artifacts / source, root)
    try:
        edit(root)
        yield name
    finally:
        shutil.rmtree(root)


def ranker_reads(feature: str, column: str) -> Callable[[Path], None]:
    """An `edited_run` edit: the ranker manifest says model feature `feature` reads `column`."""

    def edit(run: Path) -> None:
        def remap(manifest: dict) -> None:
            assert feature in manifest["source_columns"], f"the ranker reads no {feature!r}"
            manifest["source_columns"][feature] = column

        edit_json(run / "ranking" / "ranker.manifest.json", remap)

    return edit
