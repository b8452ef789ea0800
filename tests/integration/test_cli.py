"""The `pinfeed` CLI as a user meets it: `pinfeed run` end to end on a tiny world in an isolated
project home, and clear one-line errors (exit code 2, no traceback) on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from feature_repo.store import online_features, open_store
from pinfeed.home import ProjectHome
from pinfeed_cli.pipeline import run_pipeline
from tests.support.homes import make_home

TINY_WORLD = {"users": 300, "pins": 1200, "topics": 20, "days": 5}


def pinfeed(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinfeed_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PINFEED_HOME": str(home), "COLUMNS": "200"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def ran_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    home = make_home(tmp_path_factory.mktemp("run"))
    run_pipeline(home, seed=3, generator_overrides=TINY_WORLD, stop_after="training sets")
    return home


def test_run_writes_every_stage_output(ran_home: ProjectHome) -> None:
    for name in ("impressions", "conversions", "users.parquet", "pins.parquet", "meta.json"):
        assert (ran_home.events / name).exists()
    assert (ran_home.feast / "registry.db").exists()
    for name in ("retrieval", "ranking"):
        path = ran_home.training_sets / f"{name}.parquet"
        assert pq.ParquetFile(path).metadata.num_rows > 0
        assert (ran_home.training_sets / f"{name}.json").exists()


def test_run_leaves_latest_features_online(ran_home: ProjectHome) -> None:
    """The online store answers for a user active on the last day with that day's snapshot."""
    features = pq.read_table(ran_home.features / "user_features.parquet").to_pandas()
    last = features[features.event_timestamp == features.event_timestamp.max()].iloc[0]
    online = online_features(
        open_store(ran_home),
        "ranking_v1",
        [{"user_id": int(last.user_id), "pin_id": 0, "query_pin_id": 0}],
    )
    assert online["user_features__user_impressions_30d"] == [last.user_impressions_30d]


def test_generate_is_deterministic_per_seed_through_the_cli(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        done = pinfeed(
            "data", "generate", "--seed", "5", "--out", str(tmp_path / name), home=tmp_path
        )
        assert done.returncode == 0, done.stdout + done.stderr
        outs.append(pq.read_table(tmp_path / name / "pins.parquet"))
    assert outs[0].equals(outs[1])


def test_import_stops_at_the_bad_row_with_its_number(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "user_id,item_id,timestamp,event,dwell_s\n"
        "u1,i1,1700000000,impression,\n"
        "u1,i1,1700000005,click,40\n"
        "u2,i1,1700000009,teleport,\n"
    )
    done = pinfeed(
        "data", "import", "--interactions", str(log), "--out", str(tmp_path / "ev"), home=tmp_path
    )
    assert done.returncode == 2
    assert "row 3: event" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_missing_event_set_names_the_command_that_makes_it(tmp_path: Path) -> None:
    done = pinfeed("data", "validate", "--events", str(tmp_path / "none"), home=tmp_path)
    assert done.returncode == 2
    assert "pinfeed data generate" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_ingest_served_with_nothing_served_reconciles_and_changes_nothing(
    ran_home: ProjectHome,
) -> None:
    before = (ran_home.events / "meta.json").read_text()
    for _ in range(2):
        result = pinfeed("data", "ingest-served", home=ran_home.root)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "reconciles" in result.stdout and "does not reconcile" not in result.stdout
    assert not list(ran_home.events.glob("*/date=*/served.parquet"))
    assert '"served_traffic"' in (ran_home.events / "meta.json").read_text()
    assert '"served_traffic"' not in before
