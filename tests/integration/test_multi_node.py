"""Training on a real multi-node Ray cluster on this machine, started the way Ray's own
multi-node tests and users start one (`ray start --head`, then `ray start --address` per
node): `ray job submit` runs the retrieval job with its two workers SPREAD over two nodes, and
a run that loses a node after its first checkpoint resumes from that checkpoint on the nodes
left. Checkpoints go to a folder every node sees (one machine here; NFS or S3 on a cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from ray.util.state import list_actors

from pinfeed.artifacts.index import load_pin_index
from pinfeed.artifacts.retrieval import read_retrieval_manifest
from pinfeed.home import ProjectHome
from tests.support.homes import build_tiny_home
from tests.support.lost_node_run import EPOCHS, read_epoch_lines
from tests.support.ray_cluster import RayHead, head_node_id, ray_head, ray_worker_node
from training.retrieval.export import manifest_model_config

REPO = Path(__file__).resolve().parents[2]
TEST_BUDGET_S = 540.0  # every wait of a test inside this, under pytest's 600 s timeout
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_tiny_home(tmp_path_factory.mktemp("multi-node") / "home")


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    """The cluster's head; each test joins (and stops or loses) its own worker node."""
    with ray_head(num_cpus=2, cwd=REPO) as started:
        yield started


def submit(command: list[str], env: dict[str, str], budget_s: float = 400.0) -> str:
    """`ray job submit`, retried while the job agent is still starting (the job server can
    answer a few seconds before its agent accepts jobs), within one deadline; its output."""
    deadline = time.monotonic() + budget_s
    while True:
        submitted = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True,
            timeout=max(deadline - time.monotonic(), 1.0),
        )  # fmt: skip
        output = submitted.stdout + submitted.stderr
        if "No available agent" not in output or time.monotonic() + 5 >= deadline:
            assert submitted.returncode == 0, output[-6000:]
            return submitted.stdout
        time.sleep(5)


def test_ray_job_submit_spreads_the_job_over_two_nodes(
    head: RayHead, tiny_home: ProjectHome, tmp_path: Path
) -> None:
    config = tmp_path / "retrieval.yaml"
    spread = {"num_workers": 2, "cpus_per_worker": 0.5, "placement_strategy": "SPREAD"}
    config.write_text(yaml.safe_dump({"model": {"epochs": 1, "batch_size": 128}, "ray": spread}))
    with ray_worker_node(head, num_cpus=2) as node:
        earlier = {a.actor_id for a in train_workers(head)}
        output = submit(
            ["ray", "job", "submit", "--address", head.address, "--working-dir", ".",
             "--", "python", "-m", "training.job", "retrieval", "--config", str(config),
             "--home", str(tiny_home.root), "--run-id", "submitted"],
            head.env,
        )  # fmt: skip
        workers = [a for a in train_workers(head) if a.actor_id not in earlier]
        nodes = {head_node_id(head), node.node_id}
    assert "succeeded" in output
    # two per worker group (a group restarted under load adds two more, spread the same way)
    assert len(workers) % 2 == 0 and {w.node_id for w in workers} == nodes, workers
    out_dir = tiny_home.artifacts / "submitted" / "retrieval"
    assert manifest_model_config(read_retrieval_manifest(out_dir)).epochs == 1
    assert load_pin_index(out_dir).exact


def train_workers(head: RayHead) -> list:
    """Every Ray Train worker actor the cluster has had, dead ones included."""
    return list_actors(address=head.address, filters=[("class_name", "=", "RayTrainWorker")])


def _wait_for_epoch_zero(
    driver: subprocess.Popen, log: Path, ready: Path, output: Path, deadline: float
) -> None:
    while not (ready.exists() and len(read_epoch_lines(log)) >= 2):
        if driver.poll() is not None:
            pytest.fail(f"the driver exited with {driver.returncode}: {output.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"epoch 0 was not reported by both workers: {read_epoch_lines(log)}")
        time.sleep(0.5)


def test_a_lost_node_resumes_from_the_last_checkpoint(
    head: RayHead, tiny_home: ProjectHome, tmp_path: Path
) -> None:
    deadline = time.monotonic() + TEST_BUDGET_S
    log, ready, result, output = (tmp_path / n for n in ("epochs", "ready", "result", "output"))
    storage = tmp_path / "shared"
    head_node = head_node_id(head)
    with ray_worker_node(head, num_cpus=2) as node, output.open("w") as sink:
        driver = subprocess.Popen(
            [sys.executable, "-m", "tests.support.lost_node_run", str(tiny_home.root),
             str(storage), str(log), str(ready), str(result)],
            cwd=REPO, env={**head.env, "RAY_ADDRESS": head.gcs}, stdout=sink, stderr=sink,
        )  # fmt: skip
        try:
            _wait_for_epoch_zero(driver, log, ready, output, deadline)
            before = read_epoch_lines(log)
            # SPREAD: one worker per node, so losing the node loses a worker
            assert {e.node for e in before} == {head_node, node.node_id}, before
            node.lose()
            lost_at = time.time()
            returncode = driver.wait(timeout=max(deadline - time.monotonic(), 1.0))
        finally:
            driver.kill()
            driver.wait(timeout=10)
    assert returncode == 0, output.read_text()[-6000:]

    logged = read_epoch_lines(log)
    after = logged[len(before) :]
    assert after, f"nothing ran after the node was lost: {logged}"
    assert all(e.epoch >= 1 for e in after), f"restarted from scratch: {logged}"
    assert {e.node for e in after} == {head_node}, "the restarted group runs on the node left"
    assert sorted((e.epoch, e.rank) for e in after) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    steps_per_epoch = before[0].step
    assert all(e.step == (e.epoch + 1) * steps_per_epoch for e in after), logged
    state = json.loads(result.read_text())
    assert state["epoch"] == EPOCHS - 1 and state["step"] == EPOCHS * steps_per_epoch
    # docs/operations.md: one checkpoint per epoch, the default two kept (the newest two), in
    # the folder every node writes to
    kept = sorted((storage / "lost-node").glob("checkpoint_*/state.pt"))
    epochs = sorted(torch.load(p, map_location="cpu", weights_only=False)["epoch"] for p in kept)
    assert epochs == [EPOCHS - 2, EPOCHS - 1], kept
    print(f"epoch 1 done {min(e.time for e in after) - lost_at:.1f} s after the node was lost")
