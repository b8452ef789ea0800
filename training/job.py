"""`python -m training.job {retrieval|ranking} ...`: the training jobs, the way Ray runs them.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m training.job retrieval --config configs/retrieval.yaml --home /shared/pinfeed

Under `ray job submit` the driver finds the cluster through RAY_ADDRESS; run directly, it
starts a local Ray. `train(...)` is what both this entry and `pinfeed train` call; each job's
modules are imported only when it runs, so one job's imports never slow or break the other.
Prints the artifacts folder on success; a project error exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pinfeed.errors import PinfeedError
from pinfeed.home import ProjectHome

Job = Literal["retrieval", "ranking"]
JOBS: tuple[Job, ...] = ("retrieval", "ranking")


def config_file(job: Job, given: Path | None = None) -> Path | None:
    """The YAML a job reads: `given` (which must exist), else `configs/<job>.yaml` where it
    exists (the checkout), else None: the built-in defaults, which that file mirrors."""
    if given is not None:
        return given
    default = Path("configs") / f"{job}.yaml"
    return default if default.is_file() else None


def train(
    job: Job,
    home: ProjectHome,
    *,
    config: Path | None = None,
    run_id: str | None = None,
    epochs: int | None = None,
) -> Path:
    """Run one training job with the YAML `config` (`config_file`), writing run
    `run_id` (default: a new run for retrieval, the run retrieval made for ranking); `epochs`
    overrides the config's. Returns the folder the job wrote."""
    path = config_file(job, config)
    if job == "retrieval":
        from training.retrieval.job import train_retrieval
        from training.retrieval.job_config import RetrievalJobConfig, load_job_config

        retrieval = load_job_config(path) if path else RetrievalJobConfig()
        model = retrieval.model.model_copy(update={"epochs": epochs or retrieval.model.epochs})
        update = {"model": model, "run_id": run_id or retrieval.run_id}
        return train_retrieval(retrieval.model_copy(update=update), home)
    from training.ranking.config import RankingJobConfig, load_job_config
    from training.ranking.job import train_ranking

    ranking = load_job_config(path) if path else RankingJobConfig()
    update = {"epochs": epochs or ranking.epochs, "run_id": run_id or ranking.run_id}
    return train_ranking(ranking.model_copy(update=update), home)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.job", description=__doc__)
    parser.add_argument("job", choices=JOBS)
    parser.add_argument(
        "--config", type=Path, default=None, help="default: configs/<job>.yaml, else built-in"
    )
    parser.add_argument(
        "--home", type=Path, default=None, help="Project home (default: $PINFEED_HOME or .)"
    )
    parser.add_argument(
        "--run-id",
        default=None,
        help="Artifacts run (default: new for retrieval, joined for ranking)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="Override the config's epochs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the job, print the folder it wrote; return the exit code."""
    args = parse_args(argv)
    home = ProjectHome(args.home.resolve()) if args.home else ProjectHome.from_env()
    try:
        out = train(args.job, home, config=args.config, run_id=args.run_id, epochs=args.epochs)
    except PinfeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"artifacts: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
