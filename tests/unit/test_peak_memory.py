"""`pinfeed run`'s peak memory per step counts the processes a step starts, not only its own."""

from __future__ import annotations

import subprocess
import sys

import psutil

from pinfeed_cli.peak_memory import GIB, PeakRss

CHILD_MIB = 300
HOLD = f"b = bytearray({CHILD_MIB} * 2**20); b[::4096] = b'x' * len(b[::4096]); "
# a parent that allocates nothing and waits for a child holding CHILD_MIB for a second
PARENT = (
    "import subprocess, sys; "
    f"subprocess.run([sys.executable, '-c', {HOLD + 'import time; time.sleep(1.0)'!r}])"
)


def test_the_peak_includes_a_child_process_s_memory() -> None:
    """Sampled on a tree of its own (a Ray started by other tests may shrink meanwhile)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        with PeakRss(interval_s=0.05, root=psutil.Process(parent.pid)) as peak:
            assert parent.wait(timeout=60) == 0
    finally:
        parent.kill()
    assert peak.peak_bytes >= 0.8 * CHILD_MIB * 2**20, peak.peak_bytes
    assert peak.gib == peak.peak_bytes / GIB


def test_a_process_gone_before_the_end_does_not_fail_the_step() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "pass"])
    root = psutil.Process(parent.pid)
    with PeakRss(interval_s=0.05, root=root) as peak:
        parent.wait(timeout=60)
    assert peak.peak_bytes >= 0  # the sampler survived the root's exit
