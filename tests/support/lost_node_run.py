"""The driver of `test_multi_node.py`'s lost-node run, in a process of its own (the test
process holds the session's local Ray; a driver joins one cluster only). It trains the tiny
retrieval run with two SPREAD workers on the cluster in RAY_ADDRESS and writes the result.

    python -m tests.support.lost_node_run HOME STORAGE LOG READY RESULT

After each epoch's checkpoint is committed every worker logs an `EpochLine`; after epoch 0
rank 0 touches READY and the workers wait there for the test to lose a node (bounded). A
restarted group resumes at epoch 1, so it never waits again; one that restarted from scratch
would. The hook is pickled by value: run with `-m`, this module is `__main__`."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import ray
import ray.train

from pinfeed.home import ProjectHome
from tests.support.retrieval_run import tiny_retrieval_run
from training.ray_options import RayTrainSettings
from training.ray_train import fit, load_result_state
from training.retrieval.ray_loop import retrieval_loop

EPOCHS = 3
BATCH = 128
WAIT_FOR_LOSS_S = 180.0


class EpochLine(NamedTuple):
    """One worker's line in the log, written once its epoch's checkpoint is committed."""

    epoch: int
    step: int
    rank: int
    node: str  # the Ray node id the worker ran on
    time: float  # epoch seconds

    def line(self) -> str:
        return f"{self.epoch} {self.step} {self.rank} {self.node} {self.time:.3f}\n"


def read_epoch_lines(log: Path) -> list[EpochLine]:
    """The complete lines so far, in the order written (a line still being written is left
    for the next read)."""
    text = log.read_text() if log.exists() else ""
    complete = text[: text.rfind("\n") + 1].splitlines()
    return [
        EpochLine(int(e), int(s), int(r), node, float(t))
        for e, s, r, node, t in (line.split() for line in complete)
    ]


@dataclass(frozen=True)
class WaitForNodeLoss:
    """Epoch hook: log where each rank runs; after epoch `epoch`, wait to be torn down."""

    log: Path
    ready: Path
    epoch: int = 0

    def __call__(self, epoch: int, step: int) -> None:
        rank = ray.train.get_context().get_world_rank()
        node = ray.get_runtime_context().get_node_id()
        with self.log.open("a") as handle:  # one short O_APPEND write per line: never torn
            handle.write(EpochLine(epoch, step, rank, node, time.time()).line())
        if epoch != self.epoch:
            return
        if rank == 0:
            self.ready.touch()
        time.sleep(WAIT_FOR_LOSS_S)  # the controller kills this worker when its peer is lost
        raise RuntimeError(f"no node was lost within {WAIT_FOR_LOSS_S} s of epoch {epoch}")


def main(home: Path, storage: Path, log: Path, ready: Path, result_file: Path) -> None:
    run = tiny_retrieval_run(ProjectHome(home), EPOCHS, BATCH, WaitForNodeLoss(log, ready))
    settings = RayTrainSettings(
        name="lost-node", storage_path=storage, num_workers=2, cpus_per_worker=0.5,
        placement_strategy="SPREAD", max_failures=1,
    )  # fmt: skip
    result = fit(retrieval_loop, run.loop.as_loop_config(), {"train": run.dataset}, settings)
    state = load_result_state(result)
    result_file.write_text(json.dumps({"epoch": state["epoch"], "step": state["step"]}))


if __name__ == "__main__":
    main(*(Path(argument) for argument in sys.argv[1:6]))
