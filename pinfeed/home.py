"""Where a pinfeed project keeps its files.

A project home is a folder holding `feature_repo/` (the Feast repo) beside `data/`; the Feast
definitions point at `../data/...` relative to the repo, so a temporary copy of the two is a
complete, isolated project (the tests use exactly that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectHome:
    root: Path

    @classmethod
    def from_env(cls) -> ProjectHome:
        """`PINFEED_HOME` if set, else the current directory."""
        return cls(Path(os.environ.get("PINFEED_HOME", ".")).resolve())

    @property
    def feature_repo(self) -> Path:
        return self.root / "feature_repo"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def events(self) -> Path:
        return self.data / "events"

    @property
    def features(self) -> Path:
        """Event-timestamped feature tables (parquet), the Feast offline sources."""
        return self.data / "features"

    @property
    def feast(self) -> Path:
        """Feast registry and the embedded SQLite online store."""
        return self.data / "feast"

    @property
    def training_sets(self) -> Path:
        return self.data / "training_sets"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def reports(self) -> Path:
        return self.root / "reports"
