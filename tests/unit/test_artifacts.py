"""The artifacts contract on its own: run ids, the "which run" rules, and the ranker inputs that
carry their run."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from pinfeed.artifacts.layout import (
    LATEST,
    RUN_ID_PATTERN,
    RunLayout,
    check_run_id,
    new_run_id,
)
from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.artifacts.runs import (
    latest_run,
    list_runs,
    resolve_run,
    run_for_ranking,
    run_for_retrieval,
)
from pinfeed.errors import ConfigError, DataNotFoundError, SchemaError


def fake_parts(run: RunLayout, *parts: str) -> RunLayout:
    """Mark a run as holding `parts` (their manifests exist; content is not read here)."""
    run.create()
    for part in parts:
        folder = run.retrieval if part == "retrieval" else run.ranking
        folder.mkdir(parents=True, exist_ok=True)
        manifest = run.retrieval_manifest if part == "retrieval" else run.ranker_manifest
        manifest.write_text("{}")
    return run


def test_new_run_ids_are_valid_unique_and_sort_by_time() -> None:
    ids = [new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(re.fullmatch(RUN_ID_PATTERN, run_id) for run_id in ids)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", ids[0])


@pytest.mark.parametrize("bad", ["", "../up", "a b", "-lead", LATEST, "x" * 129])
def test_bad_run_ids_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ConfigError, match="run_id"):
        check_run_id(bad)


def test_latest_is_the_newest_created_run_holding_the_parts(tmp_path: Path) -> None:
    """A named run created after a dated one is newer, whatever the names' sort order."""
    dated = fake_parts(RunLayout.of(tmp_path, "20991231-235959-ffffff"), "retrieval", "ranking")
    time.sleep(0.01)
    named = fake_parts(RunLayout.of(tmp_path, "aaa-named"), "retrieval", "ranking")
    time.sleep(0.01)
    fake_parts(RunLayout.of(tmp_path, "zz-retrieval-only"), "retrieval")
    assert [run.run_id for run in list_runs(tmp_path)][:2] == [dated.run_id, named.run_id]
    assert latest_run(tmp_path).run_id == "aaa-named"
    assert latest_run(tmp_path, need=("retrieval",)).run_id == "zz-retrieval-only"
    assert resolve_run(tmp_path, LATEST).run_id == "aaa-named"


def test_a_folder_without_a_record_counts_from_its_creation(tmp_path: Path) -> None:
    old = fake_parts(RunLayout.of(tmp_path, "old"), "retrieval", "ranking")
    time.sleep(0.01)
    hand = RunLayout.of(tmp_path, "by-hand")
    fake_parts(hand, "retrieval", "ranking")
    hand.record_path.unlink()
    stamp = time.time() + 5
    os.utime(hand.root, (stamp, stamp))
    assert old.record().created_at < hand.record().created_at
    assert latest_run(tmp_path).run_id == "by-hand"


def test_resolve_names_what_is_missing_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="pinfeed train retrieval"):
        latest_run(tmp_path)
    fake_parts(RunLayout.of(tmp_path, "half"), "retrieval")
    with pytest.raises(DataNotFoundError, match="pinfeed train ranking --run-id half"):
        resolve_run(tmp_path, "half")
    with pytest.raises(DataNotFoundError, match=r"runs under .*\['half'\]"):
        resolve_run(tmp_path, "nope")


def test_ranking_joins_the_run_retrieval_made(tmp_path: Path) -> None:
    made = run_for_retrieval(tmp_path, None)
    assert json.loads(made.record_path.read_text())["run_id"] == made.run_id
    fake_parts(made, "retrieval")
    time.sleep(0.01)
    run_for_retrieval(tmp_path, "aborted")  # created, but its training never finished
    (tmp_path / ".ipynb_checkpoints").mkdir()  # not a run
    assert run_for_ranking(tmp_path, None).run_id == made.run_id
    fake_parts(made, "ranking")
    with pytest.raises(ConfigError, match="no run waits for a ranker"):
        run_for_ranking(tmp_path, None)
    assert run_for_ranking(tmp_path, made.run_id).run_id == made.run_id
    assert [run.run_id for run in list_runs(tmp_path)] == [made.run_id, "aborted"]
    assert run_for_ranking(tmp_path / "empty", None).root.parent == tmp_path / "empty"


def test_a_corrupt_run_record_is_an_error_naming_the_file(tmp_path: Path) -> None:
    run = run_for_retrieval(tmp_path, "broken")
    run.record_path.write_text("{not json")
    with pytest.raises(SchemaError, match=r"run\.json"):
        list_runs(tmp_path)


def _inputs(rows: int, run_id: str) -> RankerInputs:
    return RankerInputs(
        dense=np.full((rows, 3), rows, np.float32),
        topic=np.arange(rows, dtype=np.int64),
        pin_embedding=np.zeros((rows, 2), np.float32),
        query_embedding=np.ones((rows, 2), np.float32),
        run_id=run_id,
    )


def test_ranker_inputs_stack_rows_of_one_run_only() -> None:
    stacked = RankerInputs.concat([_inputs(2, "a"), _inputs(3, "a")])
    assert len(stacked) == 5 and stacked.run_id == "a"
    assert stacked.topic.tolist() == [0, 1, 0, 1, 2]
    assert stacked.take(slice(2, 4)).run_id == "a"
    assert list(stacked.feed()) == ["dense", "topic", "pin_embedding", "query_embedding"]
    with pytest.raises(SchemaError, match="several runs"):
        RankerInputs.concat([_inputs(2, "a"), _inputs(2, "b")])
