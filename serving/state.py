"""Serving's small mutable state, kept in files so every replica of every deployment sees it:

    <state_dir>/active_run.json   {"run_id": ...}: the artifacts being served
    <state_dir>/utility.json      the active utility weights (`pinfeed.utility` format)
    <state_dir>/feedback.log      the local feedback log (serving.feedback_log)

`POST /admin/reload` writes these atomically; replicas notice through `FileWatch` (one stat per
request) and reload, so a weight change or a new run needs no restart and reaches all replicas.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pinfeed.errors import DataNotFoundError
from pinfeed.utility import (
    UtilityWeights,
    default_utility_weights,
    load_utility_weights,
    save_utility_weights,
)

ACTIVE_RUN = "active_run.json"
UTILITY = "utility.json"
FEEDBACK_LOG = "feedback.log"


class FileWatch:
    """Says whether a file changed since the last call (mtime and size; missing counts too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None

    def changed(self) -> bool:
        try:
            stat = self.path.stat()
            current = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            current = (0, 0)
        changed = current != self._seen
        self._seen = current
        return changed


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)


class ServingState:
    """The files of one state directory (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir

    @property
    def active_run_path(self) -> Path:
        return self.dir / ACTIVE_RUN

    @property
    def utility_path(self) -> Path:
        return self.dir / UTILITY

    @property
    def feedback_log_path(self) -> Path:
        return self.dir / FEEDBACK_LOG

    def active_run(self) -> str:
        if not self.active_run_path.is_file():
            raise DataNotFoundError(
                f"{self.active_run_path}: no active run; deploy with serving.app.build_app"
            )
        return str(json.loads(self.active_run_path.read_text())["run_id"])

    def set_active_run(self, run_id: str) -> None:
        _write_atomic(self.active_run_path, json.dumps({"run_id": run_id}) + "\n")

    def weights(self) -> UtilityWeights:
        return load_utility_weights(self.utility_path)

    def set_weights(self, weights: UtilityWeights) -> None:
        save_utility_weights(weights, self.utility_path)

    def initialise(self, run_id: str, run_weights: Path) -> None:
        """On deploy: serve `run_id` with the run's own weights (hand-picked if it has none)."""
        self.set_active_run(run_id)
        weights = (
            load_utility_weights(run_weights)
            if run_weights.is_file()
            else default_utility_weights()
        )
        self.set_weights(weights)
