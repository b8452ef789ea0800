"""`make bench`: every benchmark in turn, with the arguments docs/benchmarks.md records, each in
its own process (a benchmark that starts Ray or Serve leaves nothing behind for the next).

    python -m benchmarks.run_all [--only NAME[,NAME...]] [--bench-root DIR]

Prints each benchmark's table as it finishes; a failing benchmark is reported and the rest
still run (exit code 1 at the end). Some need a Redis (`benchmarks.redis`); the ranking and
retrieval training ones need `pinfeed run` to have filled `--home` first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS: dict[str, list[str]] = {
    "bench_generator": [],
    "bench_features": ["--preset", "small"],
    "bench_materialize": [],
    "bench_historical": [],
    "bench_online": ["--requests", "300", "--cluster"],
    "bench_retrieval_train": ["--epochs", "3"],
    "bench_retrieval_mask": ["--repeats", "50"],
    "bench_retrieval_infer": ["--threads", "1"],
    "bench_ann": ["--pins", "1000000"],
    "bench_ranking_train": ["--epochs", "3"],
    "bench_ranking_infer": ["--calls", "400"],
    "bench_gpu_train": ["--steps", "200"],
    "bench_query_reward": ["--users", "3000", "--requests", "2000", "--pushes", "200"],
    "serve_load": ["--pins", "100000", "--users", "2000", "--levels", "1,2,4,8", "--seconds", "10"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--bench-root", default="/tmp/pinfeed-bench", help="serve_load's project home"
    )
    args = parser.parse_args()
    chosen = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}")
    failed = []
    for name in chosen:
        extra = ["--root", args.bench_root] if name == "serve_load" else []
        command = [sys.executable, "-m", f"benchmarks.{name}", *BENCHMARKS[name], *extra]
        print(f"\n## {' '.join(command[1:])}", flush=True)
        began = time.perf_counter()
        if subprocess.run(command, check=False).returncode != 0:
            failed.append(name)
        print(f"({time.perf_counter() - began:.0f} s)", flush=True)
    if failed:
        print(f"\nfailed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
