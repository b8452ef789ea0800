"""Point-in-time join speed of `get_historical_features` as the training sets use it: DuckDB
(the local engine) and, side by side with `--engine ray`, Feast's Ray offline store on a local
Ray (feature_store.ray.yaml; one node, so Ray's overhead without its scale-out).

    python -m benchmarks.bench_historical                      # 500k entity rows, DuckDB
    python -m benchmarks.bench_historical --rows 1000000 --chunk 250000
    python -m benchmarks.bench_historical --rows 50000 --engine local --engine ray

Feature tables: 20k users and 50k pins with one snapshot a day for 14 days (1.96M snapshot rows
over four views) plus static content with 32-float embeddings; entity rows are random
(user, pin, query pin, time) in those 14 days, joined with ranking_v1 through
`training.training_sets.join_features` in time-ordered chunks. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.feast_setup import END, make_home, write_tables
from feature_repo import flavours
from feature_repo import store as feature_store
from pinfeed.errors import SchemaError
from training.training_sets import join_features

USERS, PINS, DAYS = 20_000, 50_000, 14


def entity_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, DAYS * 86_400, rows)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, USERS, rows),
            "pin_id": rng.integers(0, PINS, rows),
            "query_pin_id": rng.integers(0, PINS, rows),
            "event_timestamp": pd.Timestamp(END - timedelta(days=DAYS))
            + pd.to_timedelta(offsets, unit="s"),
        }
    )


def run(rows: int, chunks: list[int], engines: list[flavours.OfflineEngine]) -> str:
    lines = [
        f"{rows:,} entity rows, ranking_v1, {USERS:,} users x {PINS:,} pins x {DAYS} daily snapshots",
        "",
        "| engine | rows per query | seconds | rows/s | vs local | feature rows filled (user_features) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        home = make_home(Path(folder))
        write_tables(home, users=USERS, pins=PINS, days=DAYS)
        feature_store.apply_definitions(feature_store.open_store(home))
        examples = entity_rows(rows)
        local: dict[int, float] = {}
        for engine in engines:
            if engine == "ray":
                from training.ray_train import ensure_ray

                ensure_ray()
            store = feature_store.open_store(home, engine=engine)
            for chunk in chunks:
                began = time.perf_counter()
                try:
                    table = join_features(store, examples, "ranking_v1", chunk)
                except SchemaError as error:  # the Ray store lost examples: say so, keep going
                    filled = f"refused: {str(error).split('.')[0]}"
                else:
                    nulls = table.column("user_features__user_impressions_7d").null_count
                    filled = f"{table.num_rows - nulls:,}"
                seconds = time.perf_counter() - began
                if engine == "local":
                    local[chunk] = seconds
                ratio = f"{seconds / local[chunk]:.1f}x" if chunk in local else ""
                lines.append(
                    f"| {engine} | {chunk:,} | {seconds:.1f} | {rows / seconds:,.0f} | {ratio} "
                    f"| {filled} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000, help="entity rows to join")
    parser.add_argument(
        "--chunk",
        type=int,
        action="append",
        help="rows per query (repeatable; default rows, rows/4)",
    )
    parser.add_argument(
        "--engine",
        choices=flavours.OFFLINE_ENGINES,
        action="append",
        help="offline engine (repeatable; default local); local first gives the ratio",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(run(args.rows, args.chunk or [args.rows, args.rows // 4], args.engine or ["local"]))


if __name__ == "__main__":
    main()
