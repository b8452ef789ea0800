"""The newcomer's path: the README's commands, read from the README itself, run in order as
separate processes from an empty project home to a served `/recommend` answer.

Only budgets shrink (the tiny preset, one epoch, a few trials and rounds), by adding or
swapping options; each swap checks that the README still holds what it replaces, so a README
edit that breaks the path fails here.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pinfeed.artifacts.runs import list_runs
from serving.client import post_json, wait_healthy
from tests.support.homes import make_home
from tests.support.redis import free_port

# the whole path in one test: 261 s on a usual day here, 526 s on a slow one (2026-11-28,
# when every test ran about twice as long), near the suite's 600 s per test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
SECTION = "## The path, step by step"
SHRINK = {
    "--preset small": "--preset tiny",
    "--trials 30": "--trials 4 --initialization-trials 2 --no-bias-check",
    "--rounds 60 --seeds 3": "--rounds 8 --seeds 1",
    "--config configs/retrieval.yaml": "--config configs/retrieval.yaml --epochs 1",
    "--config configs/ranking.yaml": "--config configs/ranking.yaml --epochs 1",
}


def readme_path() -> list[str]:
    """The commands of the first bash block after the README's path heading."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", after, re.DOTALL)
    assert block, f"README.md: no bash block after {SECTION!r}"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def shrunk(commands: list[str]) -> list[str]:
    text = "\n".join(commands)
    for old, new in SHRINK.items():
        assert old in text, f"README.md's path no longer says {old!r}; update this test's budget"
        text = text.replace(old, new)
    return text.splitlines()


def cli(command: str, home: Path, port: int) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "pinfeed", command
    extra = ["--port", str(port)] if words[1] == "serve" else []
    return [sys.executable, "-m", "pinfeed_cli", *words[1:], "--home", str(home), *extra]


def test_readme_commands_in_order_end_in_a_served_answer(tmp_path: Path) -> None:
    commands = shrunk(readme_path())
    assert commands[-1] == "pinfeed serve", "the path ends by serving"
    home = make_home(tmp_path / "home").root
    port = free_port()
    env = {**os.environ, "COLUMNS": "200", "PINFEED_HOME": str(home)}
    for command in commands[:-1]:
        done = subprocess.run(
            cli(command, home, port), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    runs = list_runs(home / "artifacts")
    assert len(runs) == 1 and runs[0].has_retrieval() and runs[0].has_ranking(), runs
    page = (home / "reports" / "index.md").read_text()
    for section in ("## Ranking", "## Utility weights", "## Query selection"):
        assert section in page
    assert "pinfeed evaluate retrieval" in page  # the section not run names its command

    server = subprocess.Popen(cli(commands[-1], home, port), cwd=REPO, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        health = wait_healthy(base, timeout_s=300)
        assert health["model_version"].startswith(f"{runs[0].run_id}:")
        answer = post_json(f"{base}/recommend", {"user_id": 1, "k": 5}, timeout_s=60)
        assert len({item["pin_id"] for item in answer["items"]}) == 5
        assert answer["model_version"] == health["model_version"]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
