"""Offline feature build time per stage on the synthetic generator's presets.

    python -m benchmarks.bench_features                   # small preset
    python -m benchmarks.bench_features --preset medium

Generation is not timed. Prints a Markdown table (seconds and rows per stage, users/s for the
clustering stage) and the cluster-count distribution, which is what `cluster_distance_threshold`
tunes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_repo.pipeline import FeatureConfig, build_features
from pinfeed.synthetic import GeneratorConfig, generate

STAGE_TABLES = {
    "pin_content": ["pin_content"],
    "user_features": ["user_features"],
    "pin_features": ["pin_features"],
    "user_dwell": ["user_dwell"],
    "pin_dwell": ["pin_dwell"],
    "clusters": ["user_clusters", "cluster_members"],
    "cluster_reward": ["cluster_reward"],
}


def run(preset: str, seed: int, config: FeatureConfig) -> str:
    events = generate(GeneratorConfig.preset(preset, seed=seed), progress=False)
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        result = build_features(events, Path(folder), config=config, progress=False)
        total = time.perf_counter() - began
        clusters = pq.read_table(Path(folder) / "user_clusters.parquet")
    users = clusters.num_rows
    per_user = pc.list_value_length(clusters["cluster_ids"]).to_numpy()
    lines = [
        f"preset {preset} (seed {seed}): {events.impressions.num_rows:,} impressions, "
        f"{events.conversions.num_rows:,} conversions, {events.pins.num_rows:,} pins",
        "",
        "| stage | seconds | rows written | rate |",
        "|---|---:|---:|---:|",
    ]
    for stage, tables in STAGE_TABLES.items():
        seconds = result.seconds[stage]
        rows = sum(result.rows[name] for name in tables)
        rate = f"{users / seconds:,.0f} users/s" if stage == "clusters" else ""
        lines.append(f"| {stage} | {seconds:.2f} | {rows:,} | {rate} |")
    lines.append(f"| **total (with writes)** | {total:.2f} | {sum(result.rows.values()):,} | |")
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += [
        "",
        f"clusters per user: mean {per_user.mean():.2f}, median {np.median(per_user):.0f}, "
        f"max {per_user.max()}; peak RSS {rss_gib:.2f} GiB",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["small", "medium"], default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(run(args.preset, args.seed, FeatureConfig()))


if __name__ == "__main__":
    main()
