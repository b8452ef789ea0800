"""Peak memory of a step of `pinfeed run`: this process and every process it started.

The steps run in this process, in Ray workers it started (local Ray's raylet and workers are
its descendants) and in Serve replicas. A background thread sums the resident set size over
that process tree every `interval_s` and keeps the largest sum. Shared pages (Ray's object
store, a library mapped by several workers) count once per process, so the figure is an
upper bound on what the machine had to hold; a step shorter than the interval may go unseen.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

GIB = 2**30


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in `root` and its descendants (processes that exit or cannot be read
    mid-walk count 0; a tree that cannot be listed at all counts `root` alone)."""
    try:
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        tree = [root]
    total = 0
    for process in tree:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakRss:
    """`with PeakRss() as peak: ...` then `peak.gib`: the largest tree RSS seen meanwhile
    (of this process by default, or of `root`)."""

    def __init__(self, interval_s: float = 0.5, root: psutil.Process | None = None) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._root = root or psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, tree_rss(self._root))
            if self._stop.wait(self.interval_s):
                return

    @property
    def gib(self) -> float:
        return self.peak_bytes / GIB

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, tree_rss(self._root))
