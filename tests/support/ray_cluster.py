"""A Ray cluster of the test's own, started the way a user starts one (`ray start --head`, and
`ray start --address` for each further node), on ports nobody else holds, stopped without
touching any other Ray on the machine (never `ray stop`). `ray job submit` and `serve deploy`
talk to it through its dashboard address."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.redis import free_port

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class RayHead:
    address: str  # the dashboard, where `ray job submit` and `serve deploy` send their requests
    env: dict[str, str]  # the environment to run `ray`/`serve` commands against it with
    gcs: str  # host:port of its GCS, where `ray start --address` joins more nodes


@dataclass(frozen=True)
class RayNode:
    """A worker node joined to a `RayHead`, its processes in one process group of their own."""

    node_id: str
    process: subprocess.Popen

    def lose(self) -> None:
        """SIGKILL the node's raylet, its workers and `ray start` at once: a machine lost,
        not a drained node."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


# what would point the cluster's processes at someone else's state, unless a test sets it
PROJECT_VARIABLES = ("REDIS_URL", "PINFEED_HOME", "PINFEED_ADMIN_TOKEN", "PINFEED_FEAST_REDIS")


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without RAY_* (a cluster of its own) and without the
    project's own variables, with the venv's `ray` and `serve` first on PATH, and `extra` on
    top."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAY_") and k not in PROJECT_VARIABLES
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback-only test cluster: no token to hand around
    return {**env, **(extra or {})}


def wait_for_dashboard(address: str, head: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 where Ray's token authentication is on)
        except OSError:
            time.sleep(1)
    pytest.fail(f"the Ray dashboard at {address} did not answer in {timeout_s} s")


def stop_ray_process(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM makes `ray start --block` shut its node's processes down; whatever is left of
    its process group after `grace_s` is killed (a graceful stop of a head takes ~30 s here,
    all of it waiting on processes a test no longer needs)."""
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def head_node_id(head: RayHead) -> str:
    """The head's node id, as Ray's state API and `get_node_id()` name it."""
    from ray.util.state import list_nodes

    return next(n.node_id for n in list_nodes(address=head.address) if n.is_head_node)


def agent_ports() -> list[str]:
    """Explicit free ports for a node's agents (the defaults, agent 52365 and the rest, may be
    held by another Ray here, or by the cluster's other node)."""
    return ["--dashboard-agent-listen-port", str(free_port()),
            "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--metrics-export-port", str(free_port())]  # fmt: skip


@contextlib.contextmanager
def ray_head(
    num_cpus: int = 2, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[RayHead]:
    """`ray start --head --block` with every port explicit, in `cwd`, with `env` in its
    environment (what its workers, Serve's controller and replicas inherit)."""
    environment = clean_environment(env)
    port, dashboard = free_port(), free_port()
    # Ray's unix socket paths must stay under ~107 bytes: pytest's tmp_path is too deep.
    ray_temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", str(num_cpus),
         "--port", str(port), "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         "--temp-dir", str(ray_temp), "--disable-usage-stats", *agent_ports()],
        env=environment, cwd=cwd, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, head, timeout_s=90)
        yield RayHead(address=address, env=environment, gcs=f"127.0.0.1:{port}")
    finally:
        stop_ray_process(head)
        shutil.rmtree(ray_temp, ignore_errors=True)


@contextlib.contextmanager
def ray_worker_node(
    head: RayHead,
    num_cpus: int,
    cwd: Path | None = None,
    timeout_s: float = 90,
    head_goes_on: bool = True,
) -> Iterator[RayNode]:
    """`ray start --address <head> --block`: one more node of the head's cluster on this
    machine (Ray's own multi-node tests do the same), yielded once the head lists it alive.
    Once stopped, it is waited on until the head lists it DEAD, unless the head is stopped
    right after (`head_goes_on=False`; the wait is for a head that serves further tests).

    It gets a temp dir of its own, as a node on another machine has: by default a node on the
    head's machine shares the head's, and its runtime-env agent then deletes a `ray job
    submit` working dir (the job driver's cwd) when its own workers stop using it."""
    from ray.util.state import list_nodes

    known = {node.node_id for node in list_nodes(address=head.address)}
    joined: list[str] = []
    ray_temp = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))
    process = subprocess.Popen(
        [str(BIN / "ray"), "start", "--address", head.gcs, "--block", "--num-cpus",
         str(num_cpus), "--node-manager-port", str(free_port()),
         "--object-manager-port", str(free_port()), "--temp-dir", str(ray_temp),
         "--disable-usage-stats", *agent_ports()],
        env=head.env, cwd=cwd, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start --address exited with {process.returncode}")
            alive = [n for n in list_nodes(address=head.address) if n.state == "ALIVE"]
            # not the head either: a head started moments ago may not be listed in `known` yet
            joined = [n.node_id for n in alive if n.node_id not in known and not n.is_head_node]
            if joined:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the node did not join {head.gcs} in {timeout_s} s")
            time.sleep(1)
        yield RayNode(node_id=joined[0], process=process)
    finally:
        if process.returncode is None:  # not lost: its process group id is still its own
            stop_ray_process(process)
        shutil.rmtree(ray_temp, ignore_errors=True)
        if joined and head_goes_on:
            wait_until_dead(head, joined[0], timeout_s)


def wait_until_dead(head: RayHead, node_id: str, timeout_s: float) -> None:
    """Until the head lists the node DEAD: a stopped node the GCS still thinks alive (its
    health checks take a few seconds to give up) could be handed the next test's workers.
    A wait, not a check: it runs in teardown, where failing would hide the test's own error,
    and a test that needs the node gone asserts where its workers ran."""
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = {n.node_id: n.state for n in list_nodes(address=head.address)}
        if states.get(node_id, "DEAD") == "DEAD":
            return
        time.sleep(1)
