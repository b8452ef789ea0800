"""Isolated project homes for the tests: a copy of feature_repo/ beside an empty data/."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from feature_repo import store as feature_store
from pinfeed.home import ProjectHome

REPO = Path(__file__).resolve().parents[1] / "feature_repo"


def make_home(root: Path) -> ProjectHome:
    """A project home at `root`: a copy of feature_repo/ whose Feast project name is unique to
    this run (tests share one Redis database), and an empty data/features/."""
    shutil.copytree(REPO, root / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    project = f"pinfeed_{uuid.uuid4().hex[:10]}"
    for name in (feature_store.SQLITE_YAML, feature_store.REDIS_YAML):
        path = root / "feature_repo" / name
        path.write_text(path.read_text().replace("project: pinfeed\n", f"project: {project}\n"))
    home = ProjectHome(root)
    home.features.mkdir(parents=True)
    return home
