"""The ecosystem's own commands on the files as shipped, each in processes of its own, the way a
user runs them (issue 15): `serve run serving/config.yaml` from the repository root answers
`/recommend`, with every store on the Redis that `REDIS_URL` names (the feedback log and the
served log included); `serve deploy` to a cluster that `ray start --head` started in another
folder, with `REDIS_URL` naming a Redis Cluster, then `serve status` HEALTHY for every
deployment, then an answer, with every store on the Redis Cluster. The only edit to the
shipped file is its port (asserted), so a free one can be used."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray.util.state import list_actors
from typer.testing import CliRunner

from feature_repo.store import open_store
from pinfeed.connection import parse_redis_url
from pinfeed.home import ProjectHome
from pinfeed.traffic.feedback_log import RedisFeedbackLog, traffic_key
from pinfeed.traffic.served import SERVED_DB
from pinfeed_cli import app as cli
from serving.app import CONFIG_FILE
from serving.config import DEPLOYMENT_NAMES
from serving.stages.feedback import FEEDBACK_LOG
from tests.support.homes import shared_serving_home, users_with_clusters
from tests.support.ray_cluster import (
    BIN,
    RayHead,
    clean_environment,
    head_node_id,
    ray_head,
    ray_worker_node,
)
from tests.support.redis import RedisProcess, RedisService, free_port
from tests.support.serving import call

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 300.0


@pytest.fixture
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    """A copy of the session's serving home per test (a few MB): these apps write traffic
    state of their own, and the Redis test removes the SQLite online store."""
    shared = shared_serving_home(tmp_path_factory.getbasetemp())
    copy = tmp_path_factory.mktemp("ecosystem") / "home"
    shutil.copytree(shared.root, copy, ignore=shutil.ignore_patterns("serving"))
    return ProjectHome(copy)


def shipped_config_on(port: int, folder: Path) -> Path:
    """serving/config.yaml with only its port changed."""
    shipped = yaml.safe_load(CONFIG_FILE.read_text())
    edited = yaml.safe_load(CONFIG_FILE.read_text())
    edited["http_options"]["port"] = port
    assert {**edited, "http_options": {**edited["http_options"], "port": None}} == {
        **shipped, "http_options": {**shipped["http_options"], "port": None}}  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(edited, sort_keys=False))
    return path


def recommend_until_answered(base_url: str, user: int, process: subprocess.Popen | None) -> dict:
    """POST /recommend until the app answers 200 (it is still deploying before), failing
    at once when the process serving it exited."""
    deadline = time.monotonic() + STARTUP_S
    last: object = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the serving process exited with {process.returncode}")
        # not up yet: no listener, or the proxy's own plain-text 404/503 while deploying
        with contextlib.suppress(OSError, ValueError):
            status, body = call(f"{base_url}/recommend", {"user_id": user, "k": 5})
            if status == 200:
                return body
            last = (status, body)
        time.sleep(2)
    pytest.fail(f"{base_url}/recommend did not answer 200 in {STARTUP_S:.0f} s: {last}")


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`command` in its own process group; Ctrl-C at the end (what a user does to `serve
    run`: it shuts Serve and its local Ray down), SIGKILL to what is left after a minute."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def load_into(home: ProjectHome, url: str) -> None:
    """`pinfeed features materialize` into the Redis at `url`, then no SQLite online store:
    answers can only come from Redis."""
    loaded = CliRunner().invoke(
        cli, ["features", "materialize", "--home", str(home.root)], env={"REDIS_URL": url}
    )
    assert loaded.exit_code == 0, loaded.output
    (home.feast / "online_store.db").unlink()


def assert_every_store_on_redis(
    home: ProjectHome, redis_service: RedisService, base: str, answer: dict
) -> None:
    """An undegraded answer, whose feedback lands in the Redis feedback log and is credited
    (served log and ledger in Redis too), and no local file took any of it."""
    url = redis_service.url
    cluster = parse_redis_url(url).cluster
    assert not answer["degraded"] and len(answer["items"]) == 5, answer
    events = [
        {"request_id": answer["request_id"], "pin_id": answer["items"][0]["pin_id"],
         "kind": kind}
        for kind in ("impression", "click")
    ]  # fmt: skip
    status, accepted = call(f"{base}/feedback", {"events": events})
    assert status == 202 and accepted["accepted"] == 2, accepted
    project = open_store(home).project
    client = redis_service.client()
    in_redis = {r.event_id for r in RedisFeedbackLog(url, project).read_all()}
    assert set(accepted["event_ids"]) <= in_redis, (accepted["event_ids"], in_redis)
    deadline = time.monotonic() + 60
    while client.xlen(traffic_key(project, "served", cluster=cluster)) == 0:
        assert time.monotonic() < deadline, "the served log never reached Redis"
        time.sleep(0.5)
    assert accepted["applied"] and accepted["unmatched"] == 0, accepted
    credits = f"pinfeed:credit:{{{project}:*" if cluster else f"pinfeed:credit:{project}:*"
    assert list(client.scan_iter(match=credits)), "ledger"
    local = [home.data / "serving" / name for name in (FEEDBACK_LOG, SERVED_DB)]
    assert not [path for path in local if path.exists()], "traffic state went to local files"
    assert not (home.feast / "online_store.db").exists(), "an online store was made in SQLite"


def test_serve_run_of_the_shipped_file_keeps_every_store_on_redis(
    home: ProjectHome, own_redis: RedisProcess, tmp_path: Path
) -> None:
    load_into(home, own_redis.endpoint.url)
    port = free_port()
    config = shipped_config_on(port, tmp_path)
    env = clean_environment({"PINFEED_HOME": str(home.root), "REDIS_URL": own_redis.endpoint.url})
    user = users_with_clusters(home)[0]
    with running([str(BIN / "serve"), "run", str(config)], env, tmp_path / "serve.log") as run:
        base = f"http://127.0.0.1:{port}"
        answer = recommend_until_answered(base, user, run)
        assert_every_store_on_redis(home, own_redis.endpoint, base, answer)


def test_serve_deploy_to_a_cluster_started_elsewhere_then_serve_status(
    home: ProjectHome, redis_cluster: RedisService, tmp_path: Path
) -> None:
    """The cluster, two nodes, is started in another folder with PINFEED_HOME and REDIS_URL
    exported (the documented way), REDIS_URL naming a Redis Cluster: every store goes there,
    and Serve spreads the shipped file's two Recommender replicas over the two nodes."""
    load_into(home, redis_cluster.url)
    port = free_port()
    config = shipped_config_on(port, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    user = users_with_clusters(home)[0]
    env = {"PINFEED_HOME": str(home.root), "REDIS_URL": redis_cluster.url}
    with (
        ray_head(num_cpus=2, env=env, cwd=elsewhere) as head,
        ray_worker_node(head, num_cpus=2, cwd=elsewhere) as node,
    ):
        deployed = subprocess.run(
            ["serve", "deploy", str(config), "--address", head.address],
            cwd=REPO, env=head.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        app = wait_for_status(head)
        base = f"http://127.0.0.1:{port}"
        answer = recommend_until_answered(base, user, None)
        assert_every_store_on_redis(home, redis_cluster, base, answer)
        recommenders = list_actors(
            address=head.address,
            filters=[
                ("class_name", "=", "ServeReplica:pinfeed:Recommender"),
                ("state", "=", "ALIVE"),
            ],
        )
        nodes = {head_node_id(head), node.node_id}
    placed = sorted(r.node_id for r in recommenders)
    assert len(placed) == 2 and set(placed) == nodes, (placed, nodes)
    health = {name: d["status"] for name, d in app["deployments"].items()}
    assert health == dict.fromkeys(DEPLOYMENT_NAMES, "HEALTHY"), app


def wait_for_status(head: RayHead) -> dict:
    """`serve status` until the app is RUNNING (every replica started), failing at once on a
    failed deploy (a refused home, say) with Serve's message; the app's entry."""
    deadline = time.monotonic() + STARTUP_S
    while True:
        status = subprocess.run(
            ["serve", "status", "--address", head.address],
            cwd=REPO, env=head.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr[-2000:]
        app = (yaml.safe_load(status.stdout).get("applications") or {}).get("pinfeed") or {}
        if app.get("status") == "RUNNING":
            return app
        assert app.get("status") != "DEPLOY_FAILED", status.stdout
        assert time.monotonic() < deadline, f"not RUNNING in {STARTUP_S:.0f} s:\n{status.stdout}"
        time.sleep(2)
