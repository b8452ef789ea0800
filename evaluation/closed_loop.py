"""The closed loop's clients and its report (`pinfeed evaluate closed-loop`; the orchestration,
which drives the running Serve app, is `pinfeed_cli.closed_loop`).

The clients are the synthetic generator's own users: the world an event set was generated from
is rebuilt from its `meta.json` (generator config and seed) together with the engagement
intercepts the generator solved, so a served answer is engaged with exactly as the generator's
users engage (`pinfeed.synthetic.engagement.react`, interests as at the end of the period). A
client reports every item as shown (`impression`), plus its closeups, saves and clicks (with
the click's dwell), as a real client would.

Per round the report keeps the engagement rate (items with a closeup, save or click over items
shown), the long-click rate, and the share of items from each kind of the user's interests
(stable, fading, new, none), which shows what query selection and retrieval serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.sim_report import t_interval
from pinfeed.errors import ConfigError
from pinfeed.events import read_event_meta
from pinfeed.synthetic import GeneratorConfig
from pinfeed.synthetic.engagement import Intercepts, react
from pinfeed.synthetic.logging_policy import DayImpressions
from pinfeed.synthetic.world import FADING, NEW, STABLE, World, build_world

INTEREST_KINDS = {"stable": STABLE, "fading": FADING, "new": NEW}


@dataclass(frozen=True)
class ClientRound:
    """One round's answers as the clients saw them."""

    shown: int
    engaged: int
    long_clicks: int
    kinds: dict[str, int]
    """Items per interest kind of their topic for the user (`INTEREST_KINDS` and "none")."""

    def as_dict(self) -> dict[str, Any]:
        shown = max(self.shown, 1)
        return {
            "shown": self.shown,
            "engagement_rate": self.engaged / shown,
            "long_click_rate": self.long_clicks / shown,
            "interest_share": {kind: n / shown for kind, n in self.kinds.items()},
        }


class SimClients:
    """The generator's users answering served feeds (see the module docstring)."""

    def __init__(self, config: GeneratorConfig, world: World, intercepts: Intercepts) -> None:
        self.config = config
        self.world = world
        self.intercepts = intercepts

    @classmethod
    def of_event_set(cls, events: Path) -> SimClients:
        """The clients of the synthetic event set at `events` (refuses imported logs: they
        have no ground truth to engage with)."""
        meta = read_event_meta(events)
        if meta.source != "synthetic" or "generator" not in meta.details:
            raise ConfigError(f"{events}: the closed loop needs a synthetic event set")
        config = GeneratorConfig.model_validate(meta.details["generator"])
        world_seed = np.random.SeedSequence(config.seed).spawn(2 + config.days)[0]
        world = build_world(config, np.random.default_rng(world_seed))
        return cls(config, world, Intercepts(**meta.details["intercepts"]))

    def react(
        self, user_id: int, pin_ids: list[int], rng: np.random.Generator
    ) -> tuple[list[dict[str, Any]], ClientRound]:
        """The feedback events of one answer (without request_id) and its counts."""
        n = len(pin_ids)
        pins = np.asarray(pin_ids, np.int32)
        day = DayImpressions(
            request=np.zeros(n, np.int64),
            user=np.full(n, user_id, np.int32),
            pin=pins,
            ts_us=np.zeros(n, np.int64),
            surface=np.zeros(n, np.int8),
            query_pin=np.full(n, -1, np.int32),
            query_topic=np.full(n, -1, np.int32),
            position=np.arange(n, dtype=np.int32),
            requests=1,
        )
        out = react(self.config, self.world, day, np.ones(n), self.intercepts, rng)
        events: list[dict[str, Any]] = []
        for i, pin in enumerate(pin_ids):
            events.append({"pin_id": int(pin), "kind": "impression"})
            for kind in ("closeup", "save"):
                if getattr(out, kind)[i]:
                    events.append({"pin_id": int(pin), "kind": kind})
            if out.click[i]:
                dwell = float(out.dwell_s[i])
                events.append({"pin_id": int(pin), "kind": "click", "dwell_s": round(dwell, 3)})
        return events, ClientRound(
            shown=n,
            engaged=int(out.engaged.sum()),
            long_clicks=int(out.long_click.sum()),
            kinds=self._kinds(user_id, pins),
        )

    def _kinds(self, user_id: int, pins: np.ndarray) -> dict[str, int]:
        users = self.world.users
        topics = self.world.pins.topic[pins]
        match = users.topics[user_id][None, :] == topics[:, None]
        kind = np.where(match.any(axis=1), users.kind[user_id][match.argmax(axis=1)], -1)
        counts = {name: int((kind == code).sum()) for name, code in INTEREST_KINDS.items()}
        return counts | {"none": int((kind == -1).sum())}


def merge_rounds(rounds: list[ClientRound]) -> ClientRound:
    kinds = {name: sum(r.kinds.get(name, 0) for r in rounds) for name in rounds[0].kinds}
    return ClientRound(
        shown=sum(r.shown for r in rounds),
        engaged=sum(r.engaged for r in rounds),
        long_clicks=sum(r.long_clicks for r in rounds),
        kinds=kinds,
    )


def interval(values: list[float]) -> dict[str, Any]:
    """{"mean", "ci95": [low, high], "seeds"} over seeds (t interval; one seed: the value)."""
    return {**t_interval(np.asarray(values, np.float64)), "seeds": len(values)}


def phase_summary(name: str, per_seed: list[list[ClientRound]]) -> dict[str, Any]:
    """One phase over seeds: engagement and long-click rates with 95% intervals, and the
    rounds of the first seed."""
    totals = [merge_rounds(rounds) for rounds in per_seed]
    return {
        "phase": name,
        "engagement_rate": interval([t.engaged / max(t.shown, 1) for t in totals]),
        "long_click_rate": interval([t.long_clicks / max(t.shown, 1) for t in totals]),
        "interest_share": {
            kind: interval([t.kinds[kind] / max(t.shown, 1) for t in totals])
            for kind in totals[0].kinds
        },
        "rounds": [[r.as_dict() for r in rounds] for rounds in per_seed],
    }


def plot_rounds(report: dict[str, Any], path: Path) -> Path:
    """Engagement rate per round, phases side by side, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    offset = 0
    for phase in report["phases"]:
        for seed, rounds in enumerate(phase["rounds"]):
            x = np.arange(offset, offset + len(rounds))
            label = phase["phase"] if seed == 0 else None
            color = "C0" if offset == 0 else "C1"
            ax.plot(x, [r["engagement_rate"] for r in rounds], "o-", color=color, label=label)
        offset += len(phase["rounds"][0])
    ax.axvline(offset / 2 - 0.5, color="grey", linestyle=":")
    ax.set_xlabel("round (dotted: ingest, retrain, reload)")
    ax.set_ylabel("engagement rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paired_lift(report: dict[str, Any]) -> dict[str, Any]:
    """Engagement after minus before retraining, paired within seed (each seed's two phases
    share its world and users): {"mean", "ci95", "seeds"} from the report's rounds."""

    def rate(rounds: list[dict[str, Any]]) -> float:
        shown = sum(r["shown"] for r in rounds)
        return sum(r["engagement_rate"] * r["shown"] for r in rounds) / max(shown, 1)

    before, after = (phase["rounds"] for phase in report["phases"][:2])
    return interval([rate(b) - rate(a) for a, b in zip(before, after, strict=True)])
