"""Synthetic generator throughput: events (impressions + conversions) per second per preset.

    python -m benchmarks.bench_generator            # small preset
    python -m benchmarks.bench_generator --medium   # small and medium

Prints a Markdown table. Peak RSS is the process's high-water mark so far (monotone across rows).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass

from pinfeed.synthetic import GeneratorConfig, generate


@dataclass(frozen=True)
class Measurement:
    preset: str
    config: GeneratorConfig
    impressions: int
    conversions: int
    seconds: float
    peak_rss_gib: float

    @property
    def events_per_s(self) -> float:
        return (self.impressions + self.conversions) / self.seconds


def measure(preset: str, seed: int) -> Measurement:
    config = GeneratorConfig.preset(preset, seed=seed)
    started = time.perf_counter()
    events = generate(config, progress=False)
    seconds = time.perf_counter() - started
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return Measurement(
        preset=preset,
        config=config,
        impressions=events.impressions.num_rows,
        conversions=events.conversions.num_rows,
        seconds=seconds,
        peak_rss_gib=rss_kib / 2**20,
    )


def markdown(rows: list[Measurement]) -> str:
    lines = [
        "| preset | users | pins | days | impressions | conversions | seconds | events/s | peak RSS (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rows:
        c = m.config
        lines.append(
            f"| {m.preset} | {c.users:,} | {c.pins:,} | {c.days} | {m.impressions:,} "
            f"| {m.conversions:,} | {m.seconds:.2f} | {m.events_per_s:,.0f} | {m.peak_rss_gib:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--medium", action="store_true", help="also run the medium preset")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    args = parser.parse_args()
    presets = ["small", "medium"] if args.medium else ["small"]
    rows = [measure(preset, args.seed) for preset in presets]
    print(f"CPU cores visible: {os.cpu_count()}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
