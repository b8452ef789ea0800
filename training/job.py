"""`python -m training.job {retrieval|ranking} ...`: the training jobs, the way Ray runs them.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python -m training.job retrieval --config configs/retrieval.yaml --home /shared/pinfeed

Under `ray job submit` the driver finds the cluster through RAY_ADDRESS; run directly, it
starts a local Ray. Each job parses its own options: `retrieval` here, `ranking` in
`training.ranking.job:main` (imported only when asked for, so one job's imports never slow
or break the other). Prints the artifacts folder on success; a project error exits with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pinfeed.errors import PinfeedError
from pinfeed.home import ProjectHome

JOBS = {
    "retrieval": "training.job:retrieval_main",
    "ranking": "training.ranking.job:main",
}


@dataclass(frozen=True)
class JobArgs:
    """The options every training job takes."""

    config: Path
    home: ProjectHome
    run_id: str | None


def parse_job_args(job: str, description: str, argv: Sequence[str] | None) -> JobArgs:
    """`--config FILE [--home DIR] [--run-id ID]` for `python -m training.job <job>`."""
    parser = argparse.ArgumentParser(prog=f"training.job {job}", description=description)
    parser.add_argument("--config", type=Path, default=Path("configs") / f"{job}.yaml")
    parser.add_argument(
        "--home", type=Path, default=None, help="Project home (default: $PINFEED_HOME or .)"
    )
    parser.add_argument("--run-id", default=None, help="Artifacts folder name (default: UTC time)")
    args = parser.parse_args(argv)
    home = ProjectHome(args.home.resolve()) if args.home else ProjectHome.from_env()
    return JobArgs(config=args.config, home=home, run_id=args.run_id)


def retrieval_main(argv: Sequence[str] | None = None) -> Path:
    """`python -m training.job retrieval --config FILE [--home DIR] [--run-id ID]`."""
    from training.retrieval.job import train_retrieval
    from training.retrieval.job_config import load_job_config

    args = parse_job_args("retrieval", "Train the two-tower retrieval model; export + index.", argv)
    config = load_job_config(args.config)
    if args.run_id:
        config = config.model_copy(update={"run_id": args.run_id})
    return train_retrieval(config, args.home)


def _entry(job: str) -> Callable[[Sequence[str]], Path]:
    """The `main(argv)` of `job`, imported now."""
    module, function = JOBS[job].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the job named by the first argument; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in JOBS:
        print(f"usage: python -m training.job {{{'|'.join(JOBS)}}} [options]", file=sys.stderr)
        return 2
    try:
        out = _entry(args[0])(args[1:])
    except PinfeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"artifacts: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
