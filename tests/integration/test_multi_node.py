"""Training on a real multi-node Ray cluster on this machine, started the way Ray's own
multi-node tests and users start one (`ray start --head`, then `ray start --address` per
node): `ray job submit` runs the retrieval job with its two workers SPREAD over two nodes, and
a run that loses a node after its first checkpoint resumes from that checkpoint on the nodes
left. Checkpoints go to a folder every node sees (one machine here; NFS or S3 on a cluster)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray.util.state import list_actors, list_nodes

from pinfeed.artifacts.index import load_pin_index
from pinfeed.artifacts.retrieval import read_retrieval_manifest
from pinfeed.home import ProjectHome
from tests.support.homes import build_tiny_home
from tests.support.lost_node_run import BATCH, EPOCHS
from tests.support.ray_head import RayHead, ray_head, ray_worker_node
from training.retrieval.export import manifest_model_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return build_tiny_home(tmp_path_factory.mktemp("multi-node") / "home")


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    """The cluster's head; each test joins (and stops or loses) its own worker node."""
    with ray_head(num_cpus=2, cwd=REPO) as started:
        yield started


def head_node_id(head: RayHead) -> str:
    return next(n.node_id for n in list_nodes(address=head.address) if n.is_head_node)


def submit(command: list[str], env: dict[str, str], budget_s: float = 420.0) -> str:
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
    config.write_text(yaml.safe_dump({"model": {"epochs": 1, "batch_size": BATCH}, "ray": spread}))
    with ray_worker_node(head, num_cpus=2) as node:
        output = submit(
            ["ray", "job", "submit", "--address", head.address, "--working-dir", ".",
             "--", "python", "-m", "training.job", "retrieval", "--config", str(config),
             "--home", str(tiny_home.root), "--run-id", "submitted"],
            head.env,
        )  # fmt: skip
        workers = list_actors(
            address=head.address, filters=[("class_name", "=", "RayTrainWorker")], detail=True
        )
        nodes = {head_node_id(head), node.node_id}
    assert "succeeded" in output
    assert len(workers) == 2 and {w.node_id for w in workers} == nodes, workers
    out_dir = tiny_home.artifacts / "submitted" / "retrieval"
    assert manifest_model_config(read_retrieval_manifest(out_dir)).epochs == 1
    assert load_pin_index(out_dir).exact


def _lines(log: Path) -> list[tuple[int, int, int, str, float]]:
    """`epoch step rank node time` per worker and epoch, in the order written."""
    rows = (line.split() for line in log.read_text().splitlines()) if log.exists() else ()
    return [(int(e), int(s), int(r), node, float(t)) for e, s, r, node, t in rows]


def _wait_for_epoch_zero(driver: subprocess.Popen, log: Path, ready: Path, output: Path) -> None:
    deadline = time.monotonic() + 300
    while not (ready.exists() and len(_lines(log)) == 2):
        if driver.poll() is not None:
            pytest.fail(f"the driver exited with {driver.returncode}: {output.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"epoch 0 was not reported by both workers: {_lines(log)}")
        time.sleep(0.5)


def test_a_lost_node_resumes_from_the_last_checkpoint(
    head: RayHead, tiny_home: ProjectHome, tmp_path: Path
) -> None:
    log, ready, result, output = (tmp_path / n for n in ("epochs", "ready", "result", "output"))
    storage = tmp_path / "shared"
    with ray_worker_node(head, num_cpus=2) as node, output.open("w") as sink:
        driver = subprocess.Popen(
            [sys.executable, "-m", "tests.support.lost_node_run", str(tiny_home.root),
             str(storage), str(log), str(ready), str(result)],
            cwd=REPO, env={**head.env, "RAY_ADDRESS": head.gcs}, stdout=sink, stderr=sink,
        )  # fmt: skip
        try:
            _wait_for_epoch_zero(driver, log, ready, output)
            before = _lines(log)
            node.lose()
            lost_at = time.time()
            returncode = driver.wait(timeout=300)
        finally:
            driver.kill()
    assert returncode == 0, output.read_text()[-6000:]

    head_node = head_node_id(head)
    assert {row[3] for row in before} == {head_node, node.node_id}, "SPREAD: one worker per node"
    after = _lines(log)[len(before) :]
    assert after, f"nothing ran after the node was lost: {_lines(log)}"
    assert all(epoch >= 1 for epoch, *_ in after), f"restarted from scratch: {_lines(log)}"
    assert {row[3] for row in after} == {head_node}, "the restarted group runs on the node left"
    assert sorted((e, r) for e, _, r, *_ in after) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    steps_per_epoch = before[0][1]
    assert all(step == (epoch + 1) * steps_per_epoch for epoch, step, *_ in after)
    state = yaml.safe_load(result.read_text())
    assert state["epoch"] == EPOCHS - 1 and state["step"] == EPOCHS * steps_per_epoch
    kept = sorted((storage / "lost-node").glob("checkpoint_*/state.pt"))
    assert len(kept) == 2, kept  # the newest two, in the folder every node writes to
    print(f"resumed {min(row[4] for row in after) - lost_at:.1f} s after the node was lost "
          f"(epoch 1 done)")  # fmt: skip
