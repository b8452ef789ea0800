"""The `ray:` block of a job config, importable without Ray: job configs (and the GPU
benchmark, on a machine without Ray) read it; `training.ray_train` turns it into a run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pinfeed.config import FrozenModel


class RayOptions(FrozenModel):
    """The `ray:` block of a job config: how the job uses the cluster. Defaults suit one
    2-core machine; the run name and default storage come from the job."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = Field(None, description="None: use GPUs when the cluster has them.")
    cpus_per_worker: float = Field(1.0, gt=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK",
        description="How workers are placed on nodes (Ray's placement group strategy). PACK "
        "(Ray's default) fills one node first; SPREAD puts them on different nodes where it "
        "can and still packs them onto the nodes left when one is lost.",
    )
    max_failures: int = Field(
        2, ge=0, description="Worker-group restarts from the last checkpoint."
    )
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: Path | None = Field(
        None,
        description="Checkpoint storage shared by all nodes; default: the run's checkpoints/.",
    )

    def settings(self, name: str, default_storage: Path) -> RayTrainSettings:
        return RayTrainSettings(
            name=name,
            storage_path=(self.storage_path or default_storage).resolve(),
            **self.model_dump(exclude={"storage_path"}),
        )


class RayTrainSettings(RayOptions):
    """How one training run uses the cluster: a job's `RayOptions` with its name and storage."""

    name: str = Field(description="Run name: checkpoints go to <storage_path>/<name>.")
    storage_path: Path = Field(  # type: ignore[assignment]
        description="Absolute path shared by all nodes (NFS/S3 on a cluster)."
    )
