"""Materialisation throughput (rows/s) into the SQLite and Redis online stores.

    python -m benchmarks.bench_materialize               # 100k pins
    python -m benchmarks.bench_materialize --pins 200000

Times `feature_repo.store.materialize` of two views over one snapshot day: pin_features (7
scalars per row) and pin_content (a 32-float embedding per row), each `--pins` rows, with
`online_write_batch_size` from feature_store.yaml. Redis is 127.0.0.1:6379 db 14 when it answers,
else a server started here. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

from benchmarks.feast_setup import END, make_home, timed, write_tables
from benchmarks.redis import bench_redis
from feature_repo import store as feature_store

VIEWS = ("pin_features", "pin_content")


def run(pins: int) -> str:
    lines = ["| online store | view | rows | seconds | rows/s |", "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with bench_redis() as redis_url:
            for backend, url in (("sqlite", None), ("redis", redis_url)):
                home = make_home(root / backend)
                write_tables(home, users=1000, pins=pins, days=1)
                store = feature_store.open_store(home, redis_url=url)
                feature_store.apply_definitions(store)
                for view in VIEWS:
                    start = END - timedelta(days=90)
                    seconds = timed(
                        lambda view=view, store=store, start=start: store.materialize(
                            start_date=start, end_date=END, feature_views=[view]
                        )
                    )
                    lines.append(
                        f"| {backend} | {view} | {pins} | {seconds:.2f} | {pins / seconds:,.0f} |"
                    )
                store.teardown()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pins", type=int, default=100_000, help="rows per materialised view")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(run(args.pins))


if __name__ == "__main__":
    main()
