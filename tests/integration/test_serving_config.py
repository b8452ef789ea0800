"""Serving without Ray: the shipped Serve config validates, configs fit small clusters, the
feedback log is durable and tolerant of a torn line, and serving runs with torch unavailable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pinfeed.errors import ConfigError
from pinfeed.traffic.feedback_log import LocalFeedbackLog
from pinfeed.traffic.records import FeedbackRecord
from serving.app import CONFIG_FILE, fit_to_cluster
from serving.config import DEPLOYMENT_NAMES, load_serve_file


def test_shipped_config_validates_and_fills_batches(tmp_path: Path) -> None:
    serve_file = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path)})
    assert serve_file.args.home == tmp_path.resolve()
    ranker = serve_file.settings("Ranker")
    assert ranker is not None
    assert ranker.max_ongoing_requests >= serve_file.args.ranker.max_batch_size
    # overload is bounded everywhere: every queue has a limit, every request a deadline
    assert {d.name for d in serve_file.deployments} == set(DEPLOYMENT_NAMES)
    assert all(d.max_queued_requests > 0 for d in serve_file.deployments)
    assert serve_file.request_timeout_s == 10


def test_config_typo_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="candiates"):
        load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path), "candiates": 10})


def test_fit_to_cluster_scales_cpus_and_drops_gpus(tmp_path: Path) -> None:
    deployments = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path)}).deployments
    fitted = fit_to_cluster(deployments, cpus=2.0, gpus=0.0)
    total = sum(d.num_replicas * d.ray_actor_options.num_cpus for d in fitted)
    assert total == pytest.approx(1.8)
    assert all(d.ray_actor_options.num_gpus == 0 for d in fitted)


def test_local_log_skips_a_torn_last_line(tmp_path: Path) -> None:
    log = LocalFeedbackLog(tmp_path / "feedback.log")
    record = FeedbackRecord("", 1, 2, "click", "2026-11-01T00:00:00+00:00", None)
    written = log.append([record, record])
    with (tmp_path / "feedback.log").open("a") as stream:
        stream.write('{"event_id": "torn", "request')
    assert [r.event_id for r in log.read_all()] == [r.event_id for r in written]
    assert len({r.event_id for r in written}) == 2


def test_serving_imports_without_torch() -> None:
    """With torch made unimportable, the serving app and its stages still import (Feast only
    soft-imports torch)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import serving.app, serving.stages.pipeline, serving.deployments.recommender\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch.'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
