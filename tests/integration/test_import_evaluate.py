"""An external interaction log, as users bring one: implicit feedback only (no impression rows),
ratings-style ids and timestamps, and some items too rarely engaged to learn an embedding (they
get a hashed one and the unknown topic). Imported with `pinfeed data import`, it passes
validation and the retrieval ablation (`evaluate retrieval --events`); the ranker, which needs
unengaged impressions as negatives, refuses it with a message that says so."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pinfeed.schema import UNKNOWN_TOPIC

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
START = 1_700_000_000


def write_log(path: Path, seed: int = 0) -> None:
    """60 users over 20 days, 150 items in 5 tastes; items 140-149 are engaged by one user each."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, 5, 60)
    rows = []
    for user in range(60):
        liked = np.flatnonzero(np.arange(140) % 5 == taste[user])
        for item in rng.choice(liked, size=12, replace=False):
            moment = START + int(rng.integers(0, 20 * 86_400))
            dwell = f"{rng.lognormal(3.0, 1.0):.1f}"
            rows.append((f"u{user}", f"movie-{item}", moment, "click", dwell))
            if rng.random() < 0.3:
                rows.append((f"u{user}", f"movie-{item}", moment + 60, "save", ""))
            if rng.random() < 0.25:
                rows.append((f"u{user}", f"movie-{item}", moment + 3_600, "conversion", ""))
    for item in range(140, 150):
        rows.append((f"u{item - 140}", f"movie-{item}", START + 86_400 * 3, "click", "12.0"))
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["user_id", "item_id", "timestamp", "event", "dwell_s"])
        writer.writerows(rows)


def pinfeed(*args: str, home: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pinfeed_cli", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        timeout=900,
    )
    assert done.returncode == code, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_an_imported_log_passes_validation_and_the_retrieval_ablation(tmp_path: Path) -> None:
    log, events = tmp_path / "log.csv", tmp_path / "data" / "events"
    write_log(log)
    pinfeed("data", "import", "--interactions", str(log), home=tmp_path)
    topics = pq.read_table(events / "pins.parquet", columns=["topic"]).column("topic").to_numpy()
    assert (topics == UNKNOWN_TOPIC).sum() >= 10, "the rare items should carry the unknown topic"
    pinfeed("data", "validate", "--events", str(events), home=tmp_path)
    out = tmp_path / "reports" / "retrieval.json"
    pinfeed(
        "evaluate", "retrieval", "--seeds", "1", "--no-converged", "--events", str(events),
        "--out", str(out),
        home=tmp_path,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["config"]["heldout_conversions"] > 0
    assert report["config"]["n_pins"] == len(topics)  # every imported pin is in the corpus
    for variant, metrics in report["variants"].items():
        assert metrics["recall@100"]["mean"] is not None, variant
    refused = pinfeed("train", "ranking", home=tmp_path, code=2)
    assert "implicit-feedback" in refused.stdout and "Traceback" not in refused.stdout
