"""Which run a command means, decided in one place.

- `latest`: the newest run (by `created_at` in its `run.json`) that holds the parts the
  command needs: serving needs both models, ranking evaluation the ranker, the simulator the
  retrieval model.
- A training job creates or joins a run: `train retrieval` starts a new one unless told which;
  `train ranking` joins the newest run that has a retrieval model and no ranker yet (the one
  `train retrieval` just made), so the two jobs run one after the other fill one folder.
- A run's manifests are written last, after every file they hash: a run that holds a part is
  a run whose part is complete.
- `load_run`: a run's two manifests, hash-checked and checked against each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pinfeed.artifacts.layout import (
    LATEST,
    RUN_ID_PATTERN,
    RunLayout,
    check_run_id,
    new_run_id,
)
from pinfeed.artifacts.ranker import RankerManifest, read_ranker_manifest
from pinfeed.artifacts.retrieval import RetrievalManifest, read_retrieval_manifest
from pinfeed.errors import ConfigError, DataNotFoundError

Part = Literal["retrieval", "ranking"]
SERVABLE: tuple[Part, ...] = ("retrieval", "ranking")
_TRAIN = {"retrieval": "pinfeed train retrieval", "ranking": "pinfeed train ranking"}


def _has(run: RunLayout, part: Part) -> bool:
    return run.has_retrieval() if part == "retrieval" else run.has_ranking()


def list_runs(artifacts: Path) -> list[RunLayout]:
    """Every run folder under `artifacts` (a folder named like a run id), oldest first (by
    `created_at`, then id)."""
    if not artifacts.is_dir():
        return []
    runs = [
        RunLayout(path)
        for path in artifacts.iterdir()
        if path.is_dir() and re.fullmatch(RUN_ID_PATTERN, path.name) and path.name != LATEST
    ]
    return sorted(runs, key=lambda run: (run.record().created_at, run.run_id))


def latest_run(artifacts: Path, need: tuple[Part, ...] = SERVABLE) -> RunLayout:
    """The newest run holding every part in `need`."""
    complete = [run for run in list_runs(artifacts) if all(_has(run, p) for p in need)]
    if not complete:
        commands = " and ".join(f"`{_TRAIN[part]}`" for part in need)
        raise DataNotFoundError(f"{artifacts}: no run holds {'+'.join(need)}; run {commands}")
    return complete[-1]


def resolve_run(artifacts: Path, run_id: str, need: tuple[Part, ...] = SERVABLE) -> RunLayout:
    """`run_id` (or the newest complete run for `latest`), checked to hold the parts in `need`."""
    if run_id == LATEST:
        return latest_run(artifacts, need)
    run = RunLayout.of(artifacts, run_id)
    if not run.root.is_dir():
        known = [r.run_id for r in list_runs(artifacts)]
        raise DataNotFoundError(f"{run.root}: no such run; runs under {artifacts}: {known}")
    missing = [part for part in need if not _has(run, part)]
    if missing:
        commands = " and ".join(f"`{_TRAIN[p]} --run-id {run.run_id}`" for p in missing)
        raise DataNotFoundError(f"{run.root}: no {'/'.join(missing)} model; run {commands}")
    return run


def run_for_retrieval(artifacts: Path, run_id: str | None) -> RunLayout:
    """The run a retrieval job writes: `run_id` if given, else a new one."""
    return RunLayout.of(artifacts, check_run_id(run_id) if run_id else new_run_id()).create()


def run_for_ranking(artifacts: Path, run_id: str | None) -> RunLayout:
    """The run a ranking job writes: `run_id` if given; else the newest run that has a
    retrieval model and no ranker yet; else a new run when there is no run at all."""
    if run_id:
        return RunLayout.of(artifacts, run_id).create()
    runs = list_runs(artifacts)
    if not runs:
        return RunLayout.of(artifacts, new_run_id()).create()
    waiting = [run for run in runs if run.has_retrieval() and not run.has_ranking()]
    if not waiting:
        newest = runs[-1].run_id
        raise ConfigError(
            f"run_id: no run waits for a ranker (each has one, or no retrieval model); train "
            f"retrieval first to start a run, or pass --run-id (e.g. {newest}, to replace its ranker)"
        )
    return waiting[-1]


@dataclass(frozen=True)
class RunArtifacts:
    """One run's two models, read and checked: what serving serves."""

    layout: RunLayout
    retrieval: RetrievalManifest
    ranker: RankerManifest

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    @property
    def version(self) -> str:
        """`<run_id>:<ranker sha[:8]>`: names the models in every response."""
        return f"{self.run_id}:{self.ranker.sha256[:8]}"


def load_run(artifacts: Path, run_id: str) -> RunArtifacts:
    """Read and hash-check both manifests of a run (`latest`: the newest complete run), and
    check that both models were trained on one data set."""
    layout = resolve_run(artifacts, run_id, SERVABLE)
    retrieval = read_retrieval_manifest(layout.retrieval, verify=True)
    ranker = read_ranker_manifest(layout.ranking)
    if retrieval.content_dim != ranker.embedding_dim:
        raise ConfigError(
            f"{layout.root}: retrieval content_dim {retrieval.content_dim} != ranker "
            f"embedding_dim {ranker.embedding_dim}; both models must come from one data set"
        )
    return RunArtifacts(layout=layout, retrieval=retrieval, ranker=ranker)
