"""Run the simulation day by day and assemble the event set and its ground truth.

Random streams: `numpy.random.SeedSequence(config.seed)` is split into one stream for the world,
one for the entity attributes and one per day, so the same config and seed give identical
tables and no global RNG is touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from pinfeed.errors import ConfigError
from pinfeed.events import EventSet, EventSetMeta, write_event_set
from pinfeed.synthetic.config import GeneratorConfig
from pinfeed.synthetic.conversions import DayConversions, convert
from pinfeed.synthetic.engagement import Intercepts, Reactions, calibrate, react
from pinfeed.synthetic.logging_policy import DayImpressions, PolicyState, serve_day
from pinfeed.synthetic.summary import EventSummary, summarize
from pinfeed.synthetic.tables import (
    conversions_table,
    impressions_table,
    pins_table,
    truth_tables,
    users_table,
)
from pinfeed.synthetic.world import World, build_world

DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
IMPRESSION_KEYS = ("ts_us", "request_id", "user", "pin", "surface", "query_pin", "position")
REACTION_KEYS = ("closeup", "save", "click", "long_click", "dwell_s")
CONVERSION_KEYS = ("ts_us", "user", "pin", "kind", "request_id")


@dataclass(frozen=True)
class GeneratedWorld:
    """A generated event set plus the truth behind it (tables described in docs/data.md)."""

    events: EventSet
    truth: dict[str, pa.Table]

    def write(self, out: Path) -> Path:
        """Write the event set (`pinfeed.events.write_event_set`) and `<out>/truth/*.parquet`."""
        out = write_event_set(self.events, Path(out))
        write_truth(self.truth, out)
        return out


def write_truth(truth: dict[str, pa.Table], out: Path) -> Path:
    """Write each truth table to `<out>/truth/<name>.parquet`; returns the truth folder."""
    folder = Path(out) / "truth"
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in truth.items():
        pq.write_table(table, folder / f"{name}.parquet")
    return folder


def _to_us(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def _collect(
    impressions: dict[str, list[np.ndarray]],
    day: DayImpressions,
    reactions: Reactions,
    request_id: np.ndarray,
) -> None:
    """Append one day's impression columns (numpy, compact dtypes) to `impressions`."""
    values = {
        "ts_us": day.ts_us,
        "request_id": request_id,
        "user": day.user,
        "pin": day.pin,
        "surface": day.surface,
        "query_pin": day.query_pin,
        "position": day.position,
        "closeup": reactions.closeup,
        "save": reactions.save,
        "click": reactions.click,
        "long_click": reactions.long_click,
        "dwell_s": reactions.dwell_s,
    }
    for key, value in values.items():
        impressions.setdefault(key, []).append(value)


def _concat(columns: dict[str, list[np.ndarray]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {key: np.concatenate(columns[key]) for key in keys}


def _simulate(
    config: GeneratorConfig,
    world_rng: np.random.Generator,
    day_rngs: list[np.random.Generator],
    progress: bool,
) -> tuple[World, dict[str, np.ndarray], dict[str, np.ndarray], Intercepts]:
    world = build_world(config, world_rng)
    start_us = _to_us(config.start)
    end_us = start_us + config.days * DAY_US
    state = PolicyState(world.users.seed_pins, config.policy.history_size)
    impressions: dict[str, list[np.ndarray]] = {}
    conversions: dict[str, list[np.ndarray]] = {}
    intercepts: Intercepts | None = None
    next_request = 0
    for d in tqdm(range(config.days), desc="generating", unit="day", disable=not progress):
        rng = day_rngs[d]
        day = serve_day(config, world, state, start_us + d * DAY_US, rng)
        frac = (day.ts_us - start_us) / (end_us - start_us)
        if intercepts is None:
            if not len(day.pin):
                raise ConfigError(
                    "users/requests_per_user_day: the first day served no impression; "
                    "raise users or requests_per_user_day"
                )
            intercepts = calibrate(config, world, day, frac)
        reactions = react(config, world, day, frac, intercepts, rng)
        request_id = next_request + day.request
        next_request += day.requests
        _collect(impressions, day, reactions, request_id)
        day_conversions: DayConversions = convert(
            config, world, day, reactions, request_id, intercepts, end_us, rng
        )
        for key in CONVERSION_KEYS:
            conversions.setdefault(key, []).append(getattr(day_conversions, key))
        learned = reactions.engaged & (reactions.slot >= 0)
        state.learn(
            day.user[learned],
            reactions.slot[learned],
            day.pin[learned],
            day.ts_us[learned],
            config.policy.count_decay,
        )
    if intercepts is None:
        raise ConfigError("days: must be >= 1")
    return (
        world,
        _concat(impressions, IMPRESSION_KEYS + REACTION_KEYS),
        _concat(conversions, CONVERSION_KEYS),
        intercepts,
    )


def generate_world(config: GeneratorConfig, *, progress: bool = True) -> GeneratedWorld:
    """Simulate `config.days` days of impressions, engagements and conversions (module docs of
    `pinfeed.synthetic` describe the model) and return the event set with its truth."""
    world_seed, entity_seed, *day_seeds = np.random.SeedSequence(config.seed).spawn(2 + config.days)
    world, impressions, conversions, intercepts = _simulate(
        config,
        np.random.default_rng(world_seed),
        [np.random.default_rng(s) for s in day_seeds],
        progress,
    )
    start_us = _to_us(config.start)
    meta = EventSetMeta(
        source="synthetic",
        start=config.start,
        end=config.start + timedelta(days=config.days),
        long_click_threshold_s=config.long_click_threshold_s,
        embedding_dim=config.embedding_dim,
        details={
            "generator": config.model_dump(mode="json"),
            "intercepts": {k: round(v, 6) for k, v in asdict(intercepts).items()},
        },
    )
    events = EventSet(
        impressions=impressions_table(impressions),
        conversions=conversions_table(conversions),
        users=users_table(world, start_us, np.random.default_rng(entity_seed)),
        pins=pins_table(world, start_us),
        meta=meta,
    )
    return GeneratedWorld(events=events, truth=truth_tables(world))


def generate(config: GeneratorConfig, *, progress: bool = True) -> EventSet:
    """The event set alone (see `generate_world` for the truth tables)."""
    return generate_world(config, progress=progress).events


def generate_and_write(
    config: GeneratorConfig, out: Path, *, progress: bool = True
) -> EventSummary:
    """Generate, write the event set and truth under `out`, and summarise (the CLI's job)."""
    world = generate_world(config, progress=progress)
    world.write(out)
    return summarize(world.events)
