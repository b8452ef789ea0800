"""`pinfeed run`'s peak memory per step counts the processes a step starts, not only its own."""

from __future__ import annotations

import subprocess
import sys

import psutil

from pinfeed_cli.peak_memory import GIB, PeakRss, tree_rss

CHILD_MIB = 300


def test_the_peak_includes_a_child_process_s_memory() -> None:
    before = tree_rss(psutil.Process())
    hold = f"b = bytearray({CHILD_MIB} * 2**20); b[::4096] = b'x' * len(b[::4096]); "
    with PeakRss(interval_s=0.05) as peak:
        subprocess.run(
            [sys.executable, "-c", hold + "import time; time.sleep(1.0)"], check=True, timeout=60
        )
    assert peak.peak_bytes - before >= 0.8 * CHILD_MIB * 2**20, (before, peak.peak_bytes)
    assert peak.gib == peak.peak_bytes / GIB
    assert not peak._thread.is_alive()  # the sampler stops with the block
