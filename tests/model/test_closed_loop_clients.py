"""The closed loop's clients are the generator's own users: rebuilt from an event set's
metadata, they engage with pins of their interests more than with others, report every shown
pin and the dwell of every click, and draw the same reactions from the same random stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.closed_loop import SimClients, merge_rounds, phase_summary
from pinfeed.errors import ConfigError
from pinfeed.events import read_event_meta
from pinfeed.synthetic import GeneratorConfig, generate_and_write
from pinfeed.synthetic.world import STABLE


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("events")
    generate_and_write(GeneratorConfig.preset("tiny", seed=2), out, progress=False)
    return out


def test_clients_prefer_their_interests_and_report_what_they_did(events: Path) -> None:
    clients = SimClients.of_event_set(events)
    users, pins = clients.world.users, clients.world.pins
    user = int(np.flatnonzero((users.kind == STABLE).any(axis=1))[0])
    topic = users.topics[user][users.kind[user] == STABLE][0]
    liked = np.flatnonzero(pins.topic == topic)[:20].tolist()
    other = np.flatnonzero(~np.isin(pins.topic, users.topics[user]))[:20].tolist()
    rng = np.random.default_rng(0)
    rounds = {"liked": [], "other": []}
    for _ in range(60):
        for name, shown in (("liked", liked), ("other", other)):
            events_, counts = clients.react(user, shown, rng)
            assert [e["pin_id"] for e in events_ if e["kind"] == "impression"] == shown
            clicks = [e for e in events_ if e["kind"] == "click"]
            assert all(e["dwell_s"] > 0 for e in clicks)
            assert counts.shown == len(shown) and counts.engaged <= len(shown)
            rounds[name].append(counts)
    liked_total, other_total = merge_rounds(rounds["liked"]), merge_rounds(rounds["other"])
    assert liked_total.kinds["stable"] == liked_total.shown
    assert other_total.kinds["none"] == other_total.shown
    assert liked_total.engaged > 1.5 * other_total.engaged
    again, _ = clients.react(user, liked, np.random.default_rng(7))
    assert again == clients.react(user, liked, np.random.default_rng(7))[0]


def test_phase_summary_intervals_cover_the_seed_means(events: Path) -> None:
    clients = SimClients.of_event_set(events)
    per_seed = [
        [clients.react(3, list(range(10)), np.random.default_rng([s, r]))[1] for r in range(3)]
        for s in range(3)
    ]
    summary = phase_summary("before", per_seed)
    rate = summary["engagement_rate"]
    assert rate["ci95"][0] <= rate["mean"] <= rate["ci95"][1] and rate["seeds"] == 3
    assert len(summary["rounds"]) == 3 and len(summary["rounds"][0]) == 3


def test_an_imported_log_has_no_clients(events: Path, tmp_path: Path) -> None:
    meta = read_event_meta(events).model_copy(update={"source": "import", "details": {}})
    (tmp_path / "meta.json").write_text(meta.model_dump_json())
    with pytest.raises(ConfigError, match="synthetic"):
        SimClients.of_event_set(tmp_path)
