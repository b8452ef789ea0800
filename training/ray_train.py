"""The thin adapter over Ray Train (V2): the one file a Ray version change touches.

Models keep pure `train_step`s; a job writes `loop(config)` that runs on every worker, calls
`restore_state()` first (so a restarted worker group resumes from the latest checkpoint) and
`report_epoch()` once per epoch (V2 drops metric-only reports and polls every 2 s, so one report
per epoch carries the metrics and the checkpoint together). `fit()` assembles the TorchTrainer
with a FailureConfig, so a killed worker costs at most one epoch.

Why `report_epoch` waits for the commit: a V2 report only queues the result on the worker; the
controller registers the checkpoint when it next polls the workers (every 2 s). A worker that
dies before that poll takes its queued reports with it, and the restarted group resumes from an
older checkpoint or from scratch (seen under load: epochs 0 and 1 both reported within one poll,
then the kill, then a restart at epoch 0). Waiting for `COMMITTED` costs at most one poll per
epoch and makes "resume from the last reported epoch" deterministic.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import (
    CheckpointConfig,
    CheckpointConsistencyMode,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer

from training.ray_options import RayTrainSettings

STATE_FILE = "state.pt"


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster in RAY_ADDRESS (set by `ray job submit`) or start a local one."""
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        ray.init(address=address, num_cpus=None if address else num_cpus, log_to_driver=False)


def cluster_has_gpu() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def fit(
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    datasets: dict[str, ray.data.Dataset],
    settings: RayTrainSettings,
) -> ray.train.Result:
    """Run `loop` on `settings.num_workers` workers over `datasets` (sharded per worker)."""
    ensure_ray()
    use_gpu = cluster_has_gpu() if settings.use_gpu is None else settings.use_gpu
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=settings.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": settings.cpus_per_worker},
            placement_strategy=settings.placement_strategy,
        ),
        run_config=RunConfig(
            name=settings.name,
            storage_path=str(settings.storage_path.resolve()),
            failure_config=FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=settings.checkpoints_to_keep),
        ),
        datasets=datasets,
    )
    return trainer.fit()


def restore_state() -> dict[str, Any] | None:
    """The state saved by the latest `report_epoch`, or None on a fresh start. Call first
    thing in the loop: after a worker failure Ray restarts the loop and this resumes it."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def report_epoch(metrics: dict[str, float], state: dict[str, Any]) -> None:
    """Report this epoch's metrics with a checkpoint of `state` (model/optimizer state dicts,
    epoch, step), and return once the controller has committed it (see the module docstring).
    Every worker reports; only rank 0 writes the checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
    else:
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    ray.train.get_all_reported_checkpoints(consistency_mode=CheckpointConsistencyMode.COMMITTED)


def load_result_state(result: ray.train.Result) -> dict[str, Any]:
    """The state in a finished run's latest checkpoint (for export after `fit`)."""
    if result.checkpoint is None:
        raise RuntimeError(f"run {result.path} finished without a checkpoint: did the loop report?")
    with result.checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
