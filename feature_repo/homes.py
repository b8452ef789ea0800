"""New project homes: a copy of this Feast repo beside an empty `data/`.

A project home is what every command works in (`pinfeed.home.ProjectHome`); the Feast
definitions point at `../data/...` relative to the repo copy, so a home is complete and
isolated. `project` names the Feast project, so several homes can share one Redis database
(the tests and benchmarks give each home its own).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from feature_repo.flavours import RAY_YAML, REDIS_CLUSTER_YAML, REDIS_YAML, SQLITE_YAML
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome

REPO = Path(__file__).resolve().parent
DEFAULT_PROJECT = "pinfeed"


def create_home(root: Path, project: str | None = None) -> ProjectHome:
    """A project home at `root` (its feature_repo/ must not exist yet) whose Feast project is
    `project`, or a unique `pinfeed_<hex>` name when None."""
    target = root / "feature_repo"
    if target.exists():
        raise ConfigError(f"{target}: exists already; pick an empty folder for a new home")
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns("__pycache__", "data"))
    name = project or f"{DEFAULT_PROJECT}_{uuid.uuid4().hex[:10]}"
    for config in (SQLITE_YAML, REDIS_YAML, REDIS_CLUSTER_YAML, RAY_YAML):
        path = target / config
        path.write_text(
            path.read_text().replace(f"project: {DEFAULT_PROJECT}\n", f"project: {name}\n")
        )
    home = ProjectHome(root.resolve())
    home.features.mkdir(parents=True, exist_ok=True)
    return home
