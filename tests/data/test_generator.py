"""Contracts and behaviour of the synthetic generator (pinfeed.synthetic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pydantic
import pytest

from pinfeed.errors import ConfigError
from pinfeed.events import EventSet, EventSetMeta, conform, describe_event_set, read_event_set
from pinfeed.synthetic import (
    GeneratedWorld,
    GeneratorConfig,
    generate,
    generate_and_write,
    generate_world,
    summarize,
)
from pinfeed.synthetic.summary import gini, interaction_skew
from pinfeed.validate import validate

TINY = GeneratorConfig(users=300, pins=1000, topics=20, days=3, seed=7)
MODEST = GeneratorConfig(users=1500, pins=4000, topics=40, days=8, seed=11)
EVENT_TABLES = ("impressions", "conversions", "users", "pins")


@pytest.fixture(scope="module")
def modest() -> GeneratedWorld:
    return generate_world(MODEST, progress=False)


@pytest.fixture(scope="module")
def frames(modest: GeneratedWorld) -> dict[str, pd.DataFrame]:
    tables = {name: modest.events.table(name) for name in EVENT_TABLES}
    tables.update({f"truth_{name}": table for name, table in modest.truth.items()})
    return {name: table.to_pandas() for name, table in tables.items()}


def _engaged(impressions: pd.DataFrame) -> pd.Series:
    return impressions["closeup"] | impressions["save"] | impressions["click"]


def test_same_seed_same_tables_other_seed_differs() -> None:
    first, again = generate_world(TINY, progress=False), generate_world(TINY, progress=False)
    other = generate_world(TINY.model_copy(update={"seed": 8}), progress=False)
    for name in EVENT_TABLES:
        assert first.events.table(name).equals(again.events.table(name)), name
    for name, table in first.truth.items():
        assert table.equals(again.truth[name]), name
    assert not first.events.impressions.equals(other.events.impressions)
    assert not first.events.pins.equals(other.events.pins)


def test_output_validates_and_round_trips(tmp_path: Path) -> None:
    world = generate_world(TINY, progress=False)
    summary = generate_and_write(TINY, tmp_path / "cli", progress=False)
    assert summary.impressions == world.events.impressions.num_rows
    assert read_event_set(tmp_path / "cli").impressions.equals(world.events.impressions)
    report = validate(world.events)
    assert report.ok, {name: t.problems[:3] for name, t in report.tables.items()}
    out = world.write(tmp_path / "events")
    back = read_event_set(out)
    assert back.impressions.num_rows == world.events.impressions.num_rows
    assert back.meta.long_click_threshold_s == TINY.long_click_threshold_s
    assert back.meta.embedding_dim == TINY.embedding_dim
    for name in ("pins", "user_interests", "seed_pins", "topics"):
        assert (out / "truth" / f"{name}.parquet").exists()


def test_events_stay_in_period_with_null_cluster(frames: dict[str, pd.DataFrame]) -> None:
    start = pd.Timestamp(MODEST.start)
    end = start + pd.Timedelta(days=MODEST.days)
    for name in ("impressions", "conversions"):
        ts = frames[name]["event_ts"]
        assert ts.min() >= start and ts.max() < end, name
    impressions = frames["impressions"]
    assert impressions["cluster_id"].isna().all()
    assert set(impressions["surface"]) == {"homefeed", "related"}
    positions = impressions.groupby("request_id")["position"].agg(["min", "max", "size"])
    assert (positions["min"] == 0).all() and (positions["max"] == positions["size"] - 1).all()
    assert not impressions.duplicated(["request_id", "pin_id"]).any()


def test_rates_land_in_configured_bands(modest: GeneratedWorld) -> None:
    summary = summarize(modest.events)
    rates, targets = summary.rates, MODEST.rates
    assert 0.02 <= rates["click"] <= 0.05
    assert rates["click"] < rates["closeup"] < 0.08
    assert 0.005 <= rates["save"] <= 0.02
    assert 0.0005 <= summary.conversion_rate <= 0.005
    for name in ("closeup", "save", "click"):
        assert rates[name] == pytest.approx(getattr(targets, name), rel=0.2), name
    assert summary.conversion_rate == pytest.approx(targets.conversion, rel=0.4)
    assert 0.1 < summary.long_click_share < 0.6
    assert summary.dwell_quantiles_s["p10"] < 30 < summary.dwell_quantiles_s["p90"]


def test_clickbait_clicks_more_but_dwells_and_converts_less(
    frames: dict[str, pd.DataFrame],
) -> None:
    truth = frames["truth_pins"].set_index("pin_id")["is_clickbait"]
    impressions = frames["impressions"].assign(
        clickbait=lambda d: truth.loc[d["pin_id"]].to_numpy()
    )
    conversions = frames["conversions"].assign(
        clickbait=lambda d: truth.loc[d["pin_id"]].to_numpy()
    )
    by = impressions.groupby("clickbait")
    click_rate = by["click"].mean()
    long_share = by["long_click"].sum() / by["click"].sum()
    conversion_rate = conversions.groupby("clickbait").size().reindex([False, True], fill_value=0)
    conversion_rate = conversion_rate / by.size()
    assert click_rate[True] > 1.5 * click_rate[False]
    assert long_share[True] < 0.5 * long_share[False]
    assert conversion_rate[True] < 0.5 * conversion_rate[False]


def test_conversions_follow_a_clicked_impression(frames: dict[str, pd.DataFrame]) -> None:
    conversions, impressions = frames["conversions"], frames["impressions"]
    assert len(conversions) > 0
    joined = conversions.merge(
        impressions, on=["request_id", "pin_id"], how="left", suffixes=("", "_impression")
    )
    assert len(joined) == len(conversions)
    assert (joined["user_id"] == joined["user_id_impression"]).all()
    assert joined["click"].eq(True).all()
    assert (joined["event_ts"] > joined["event_ts_impression"]).all()
    assert set(conversions["kind"]) == {"checkout", "add_to_cart"}


def test_query_pins_were_engaged_earlier_or_are_seed_pins(
    frames: dict[str, pd.DataFrame],
) -> None:
    """Every (user, query pin) either appears in truth/seed_pins, or the user engaged
    (closeup/save/click) with that pin at an impression strictly earlier than this one; and the
    query pin's topic is one of the user's interests."""
    impressions, truth_pins = frames["impressions"], frames["truth_pins"]
    first_engaged = (
        impressions[_engaged(impressions)]
        .groupby(["user_id", "pin_id"])["event_ts"]
        .min()
        .rename("first_engaged_ts")
        .reset_index()
        .rename(columns={"pin_id": "query_pin_id"})
    )
    seeds = frames["truth_seed_pins"][["user_id", "pin_id"]].rename(
        columns={"pin_id": "query_pin_id"}
    )
    seeds["seed"] = True
    queries = impressions.drop_duplicates("request_id")[["user_id", "query_pin_id", "event_ts"]]
    queries = queries.merge(first_engaged, how="left").merge(seeds, how="left")
    is_seed = queries["seed"].eq(True)
    engaged_before = queries["first_engaged_ts"] < queries["event_ts"]
    assert (is_seed | engaged_before).all()
    assert engaged_before[~is_seed].any() and (~is_seed).mean() > 0.2
    topic = truth_pins.set_index("pin_id")["topic"].loc[queries["query_pin_id"]].to_numpy()
    interests = frames["truth_user_interests"][["user_id", "topic"]]
    matched = queries.assign(topic=topic).merge(interests, how="left", indicator=True)
    assert (matched["_merge"] == "both").all()


def test_long_click_follows_dwell_threshold(frames: dict[str, pd.DataFrame]) -> None:
    impressions = frames["impressions"]
    dwell = impressions["click_dwell_s"]
    assert dwell.notna().eq(impressions["click"]).all()
    expected = impressions["click"] & (dwell.astype("float64") >= MODEST.long_click_threshold_s)
    assert impressions["long_click"].eq(expected).all()
    assert impressions["long_click"].any()


def _topic_share_by_half(frames: dict[str, pd.DataFrame], kind: str) -> tuple[float, float]:
    """Share of engagements by users with a `kind` interest that fall on that interest's topic,
    in the period's first and second half."""
    impressions, truth = frames["impressions"], frames["truth_pins"].set_index("pin_id")
    interests = frames["truth_user_interests"]
    special = interests[interests["kind"] == kind][["user_id", "topic"]]
    engaged = impressions[_engaged(impressions)].merge(special, on="user_id")
    on_topic = truth["topic"].loc[engaged["pin_id"]].to_numpy() == engaged["topic"].to_numpy()
    half = pd.Timestamp(MODEST.start) + pd.Timedelta(days=MODEST.days / 2)
    late = (engaged["event_ts"] >= half).to_numpy()
    return float(on_topic[~late].mean()), float(on_topic[late].mean())


def test_fading_interests_fade_and_new_ones_grow(frames: dict[str, pd.DataFrame]) -> None:
    early, late = _topic_share_by_half(frames, "fading")
    assert late < 0.8 * early
    early, late = _topic_share_by_half(frames, "new")
    assert late > 1.5 * early


def test_pins_carry_topic_centroid_embeddings(modest: GeneratedWorld) -> None:
    pins = modest.events.pins
    embedding = np.stack(pins.column("content_embedding").to_numpy(zero_copy_only=False))
    assert embedding.shape == (MODEST.pins, MODEST.embedding_dim)
    centroids = np.stack(modest.truth["topics"].column("centroid").to_numpy(zero_copy_only=False))
    distance = ((embedding[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    nearest = distance.argmin(axis=1)
    assert (nearest == pins.column("topic").to_numpy()).mean() > 0.9


def test_summary_matches_hand_computed_values() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    impressions = conform(
        pa.table(
            {
                "event_ts": pa.array([start] * 4, pa.timestamp("us", tz="UTC")),
                "request_id": [1, 1, 2, 2],
                "user_id": [0, 0, 1, 1],
                "pin_id": [0, 1, 0, 1],
                "surface": ["homefeed"] * 4,
                "query_pin_id": [5, 5, 6, 6],
                "cluster_id": pa.nulls(4, pa.int64()),
                "position": pa.array([0, 1, 0, 1], pa.int32()),
                "closeup": [True, False, False, False],
                "save": [False, False, False, False],
                "click": [True, False, True, False],
                "long_click": [True, False, False, False],
                "click_dwell_s": pa.array([40.0, None, 10.0, None], pa.float32()),
            }
        ),
        "impressions",
    )
    base = generate(TINY, progress=False)
    events = EventSet(
        impressions=impressions,
        conversions=base.conversions.slice(0, 1),
        users=base.users,
        pins=base.pins,
        meta=EventSetMeta(
            source="synthetic",
            start=start,
            end=start + timedelta(days=1),
            long_click_threshold_s=30.0,
            embedding_dim=TINY.embedding_dim,
        ),
    )
    summary = summarize(events)
    assert summary.impressions == 4 and summary.requests == 2 and summary.active_users == 2
    assert summary.rates == {"closeup": 0.25, "save": 0.0, "click": 0.5, "long_click": 0.25}
    assert summary.long_click_share == 0.5
    assert summary.conversion_rate == 0.25
    assert summary.dwell_quantiles_s["p50"] == pytest.approx(25.0)


def test_config_rejects_typos_and_unknown_presets() -> None:
    with pytest.raises(pydantic.ValidationError, match="userz"):
        GeneratorConfig.model_validate({"userz": 10})
    with pytest.raises(ConfigError, match="preset"):
        GeneratorConfig.preset("huge")
    with pytest.raises(pydantic.ValidationError, match="min_interests"):
        GeneratorConfig(min_interests=5, max_interests=3)
    small = GeneratorConfig.preset("small", seed=3)
    assert (small.users, small.days, small.seed) == (3000, 14, 3)
    assert GeneratorConfig.preset("medium").users >= 50_000


@pytest.mark.parametrize(
    ("preset", "users", "pins", "impressions"),
    [
        ("tiny", 300, 1_200, 26_000),
        ("small", 3_000, 8_000, 505_000),
        ("skewed", 3_000, 8_000, 503_000),
    ],
)
def test_presets_have_the_sizes_the_data_page_states(
    preset: str, users: int, pins: int, impressions: int
) -> None:
    """docs/data.md's preset table, and its "under 0.01 % of small-preset requests hold fewer
    than 10 items" (candidates redrawn until dropped); the small world takes about a second."""
    world = generate_world(GeneratorConfig.preset(preset, seed=0), progress=False)
    events = world.events
    assert (events.users.num_rows, events.pins.num_rows) == (users, pins)
    assert abs(events.impressions.num_rows / impressions - 1) < 0.02, events.impressions.num_rows
    _, per_request = np.unique(events.impressions["request_id"].to_numpy(), return_counts=True)
    assert per_request.max() == 10
    if preset == "small":
        assert (per_request < 10).mean() < 1e-4, (per_request < 10).mean()


def test_gini_and_top_share_by_hand() -> None:
    assert gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)
    # sorted 0, 0, 0, 4: 2 * (4 * 4) / (4 * 4) - 5 / 4
    assert gini(np.array([4, 0, 0, 0])) == pytest.approx(0.75)
    # pins 7 (3x), 8 (1x); users 1 (1x), 2 (3x): top 1% of 2 pins is 1 pin
    skew = interaction_skew(np.array([1, 2, 2, 2]), np.array([7, 7, 7, 8]))
    assert skew.item_gini == pytest.approx(gini(np.array([3, 1])))
    assert skew.top1_share == pytest.approx(0.75)
    assert skew.user_log_sd == pytest.approx(np.log([1, 3]).std())
    assert skew.user_median == 2.0


def test_skewed_preset_is_as_unequal_as_the_data_page_states() -> None:
    """docs/data.md's "How skewed the worlds are" table (seed 0): the skewed world concentrates
    interactions on popular pins and active users, at the same volume and rates as small."""
    small = summarize(generate_world(GeneratorConfig.preset("small"), progress=False).events)
    skewed = summarize(generate_world(GeneratorConfig.preset("skewed"), progress=False).events)
    assert small.skew.item_gini == pytest.approx(0.589, abs=0.005)
    assert skewed.skew.item_gini == pytest.approx(0.716, abs=0.005)
    assert skewed.skew.top1_share == pytest.approx(0.186, abs=0.005)
    assert small.skew.top1_share == pytest.approx(0.129, abs=0.005)
    assert skewed.skew.user_log_sd == pytest.approx(1.16, abs=0.01)
    assert small.skew.user_log_sd == pytest.approx(0.89, abs=0.01)
    assert skewed.impressions == pytest.approx(small.impressions, rel=0.02)
    assert skewed.rates["click"] == pytest.approx(small.rates["click"], rel=0.05)


def test_event_set_line_names_sizes_seed_and_skew_knobs(tmp_path: Path) -> None:
    config = TINY.model_copy(update={"seed": 7, "pin_popularity_sigma": 2.5})
    generate_and_write(config, tmp_path / "events", progress=False)
    line = describe_event_set(tmp_path / "events")
    assert line.startswith(f"Event set: synthetic, {TINY.users:,} users, {TINY.pins:,} pins")
    assert line.endswith(
        "generator seed 7 (pin popularity log-sd 2.5, user activity log-sd 0.8, "
        "same-topic share 0.65)."
    )
    assert describe_event_set(tmp_path / "nowhere") == "Event set: not found."
