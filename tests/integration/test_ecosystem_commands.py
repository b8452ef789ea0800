"""The ecosystem's own commands on the files as shipped, each in processes of its own, the way a
user runs them (issue 15): `serve run serving/config.yaml` from the repository root answers
`/recommend`, with every store on the Redis that `REDIS_URL` names (the feedback log and the
served log included); `serve deploy` to a two-node cluster that `ray start --head` started in
another folder, with `REDIS_URL` naming a Redis Cluster, then `serve status` HEALTHY for every
deployment, an answer with every store on the Redis Cluster, a reload that reaches the
Recommender replica on each node, and a drain of the worker node under steady traffic with
no failed request (issue 13). The only edit to the shipped file is its port (asserted), so a
free one can be used."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
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
from tests.support.serving import call, reload_closeup_only

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 300.0
MOVE_S = 180.0  # a drained node's replicas started elsewhere (each start imports Feast)
ADMIN_TOKEN = "ecosystem-admin-token"


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


def test_serve_deploy_to_two_nodes_then_reload_and_drain_without_a_failed_request(
    home: ProjectHome, redis_cluster: RedisService, tmp_path: Path
) -> None:
    """The cluster, two nodes, is started in another folder with PINFEED_HOME and REDIS_URL
    exported (the documented way), REDIS_URL naming a Redis Cluster: every store goes there,
    and Serve spreads the shipped file's two Recommender replicas over the two nodes. A reload
    of the utility weights reaches the replica on each node; then the worker node is drained
    (`ray drain-node`, what a cluster manager does before taking a node away) under steady
    traffic, and every request is answered while its replicas move to the head, which serve
    the reloaded weights."""
    load_into(home, redis_cluster.url)
    port = free_port()
    config = shipped_config_on(port, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    users = users_with_clusters(home)
    env = {
        "PINFEED_HOME": str(home.root),
        "REDIS_URL": redis_cluster.url,
        "PINFEED_ADMIN_TOKEN": ADMIN_TOKEN,
        # Both nodes' proxies listen on the one port here (SO_REUSEPORT), so the kernel is
        # the load balancer, and unlike a real one it does not health-check `/-/healthz`
        # (503 from a draining proxy): keep the drained node's proxy up past the traffic,
        # which would otherwise lose the connections queued on it when Serve stops it.
        "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "600",
    }
    with (
        ray_head(num_cpus=2, env=env, cwd=elsewhere) as head,
        ray_worker_node(head, num_cpus=2, cwd=elsewhere, head_goes_on=False) as node,
    ):
        deployed = subprocess.run(
            ["serve", "deploy", str(config), "--address", head.address],
            cwd=REPO, env=head.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        app = wait_for_status(head)
        health = {name: d["status"] for name, d in app["deployments"].items()}
        assert health == dict.fromkeys(DEPLOYMENT_NAMES, "HEALTHY"), app
        base = f"http://127.0.0.1:{port}"
        answer = recommend_until_answered(base, users[0], None)
        assert_every_store_on_redis(home, redis_cluster, base, answer)
        head_node = head_node_id(head)
        recommenders = running_replicas(head, "Recommender")
        placed = sorted(recommenders.values())
        assert placed == sorted({head_node, node.node_id}), (placed, head_node, node.node_id)

        status, reloaded = reload_closeup_only(base, ADMIN_TOKEN)
        assert status == 200 and reloaded["model_version"].endswith("+closeup-only"), reloaded
        version = reloaded["model_version"]
        assert versions_by_replica(base, set(recommenders)) == dict.fromkeys(recommenders, version)

        with SteadyTraffic(base, users) as traffic:
            drain(head, node.node_id)
            drained_at = time.monotonic()
            moved = wait_until_moved(head, node.node_id, budget_s=MOVE_S)
            moved_s = time.monotonic() - drained_at
            traffic.answered_after(seconds=3.0)
        # what a load balancer in front of the proxies sees: the drained node's fails its check
        proxies = serve_details(head)["proxies"]
        assert proxies.get(node.node_id, {}).get("status") == "DRAINING", proxies
        assert set(moved.values()) == {head_node} and set(moved) != set(recommenders), moved
        assert versions_by_replica(base, set(moved)) == dict.fromkeys(moved, version)
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.answered >= 20, traffic.answered
    print(
        f"replicas moved {moved_s:.1f} s after the drain; {traffic.answered} answers, none "
        f"failed, {traffic.degraded} of them degraded"
    )


def serve_details(head: RayHead) -> dict:
    """What the cluster's Serve REST API says of its applications and proxies."""
    url = f"{head.address}/api/serve/applications/"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def serve_replicas(head: RayHead, deployment: str) -> list[dict]:
    """The deployment's replicas (replica_id, node_id, state)."""
    return serve_details(head)["applications"]["pinfeed"]["deployments"][deployment]["replicas"]


def running_replicas(head: RayHead, deployment: str) -> dict[str, str]:
    """replica id -> node id of the deployment's RUNNING replicas."""
    return {
        r["replica_id"]: r["node_id"]
        for r in serve_replicas(head, deployment)
        if r["state"] == "RUNNING"
    }


def versions_by_replica(base: str, replicas: set[str], attempts: int = 200) -> dict[str, str]:
    """`/healthz` until every replica in `replicas` has answered (Serve's router picks one per
    call): replica id -> the model version it serves."""
    seen: dict[str, str] = {}
    for _ in range(attempts):
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as answer:
            health = json.loads(answer.read())
        seen[health["replica"]] = health["model_version"]
        assert set(seen) <= replicas, f"/healthz answered from {sorted(seen)}, not {replicas}"
        if replicas <= set(seen):
            return {replica: seen[replica] for replica in replicas}
    pytest.fail(f"/healthz answered from {sorted(seen)} only, not every one of {replicas}")


def drain(head: RayHead, node_id: str) -> None:
    """`ray drain-node`: the GCS takes no new work to the node, and Serve starts a replacement
    for each of its replicas elsewhere before stopping it."""
    drained = subprocess.run(
        [str(BIN / "ray"), "drain-node", "--address", head.gcs, "--node-id", node_id,
         "--reason", "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "maintenance",
         "--deadline-remaining-seconds", "600"],
        cwd=REPO, env=head.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert drained.returncode == 0, drained.stdout[-2000:] + drained.stderr[-2000:]


def wait_until_moved(head: RayHead, node_id: str, budget_s: float) -> dict[str, str]:
    """Until, in one snapshot of Serve's status, every deployment is at its target size with
    every replica RUNNING and none on `node_id`, and the app is RUNNING with each deployment
    HEALTHY; the Recommender's replicas then (replica id -> node id)."""
    deadline = time.monotonic() + budget_s
    while True:
        app = serve_details(head)["applications"]["pinfeed"]
        deployments = app["deployments"]
        settled = app["status"] == "RUNNING" and all(
            d["status"] == "HEALTHY"
            and len(d["replicas"]) == d["target_num_replicas"]
            and all(r["state"] == "RUNNING" and r["node_id"] != node_id for r in d["replicas"])
            for d in (deployments[name] for name in DEPLOYMENT_NAMES)
        )
        if settled:
            return {r["replica_id"]: r["node_id"] for r in deployments["Recommender"]["replicas"]}
        assert time.monotonic() < deadline, f"replicas still on the drained node: {deployments}"
        time.sleep(1)


class SteadyTraffic:
    """`/recommend` one request after another from a thread until the block ends, each one's
    outcome kept: an answer that is not 200, or no answer, is a failure."""

    def __init__(self, base: str, users: list[int]) -> None:
        self.base, self.users = base, users
        self.answered = 0
        self.degraded = 0  # answered without the online store: counted, not failed
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def answered_after(self, seconds: float, budget_s: float = 60.0) -> None:
        """Let the traffic run `seconds` more, and until at least one more answer."""
        count, start = self.answered, time.monotonic()
        while time.monotonic() < start + seconds or self.answered == count:
            assert self._thread.is_alive(), "the traffic thread stopped"
            assert time.monotonic() < start + budget_s, f"no answer: {self.failures[-5:]}"
            time.sleep(0.2)

    def _run(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            user = self.users[i % len(self.users)]
            try:
                status, body = call(f"{self.base}/recommend", {"user_id": user, "k": 5})
                answered = status == 200 and len(body["items"]) == 5
            except Exception as error:  # a probe: whatever went wrong is a failed request
                self.failures.append(f"request {i} at {time.monotonic():.1f}: {error!r}")
                continue
            if answered:
                self.answered += 1
                self.degraded += bool(body["degraded"])
            else:
                self.failures.append(f"request {i} at {time.monotonic():.1f}: {status} {body}")


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
