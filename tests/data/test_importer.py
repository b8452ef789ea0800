"""Data tests for the interaction-log importer (pinfeed.importer).

Every fixture is a small log written by the test into tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pinfeed.errors import SchemaError, ValidationError
from pinfeed.events import EventSet, read_event_set
from pinfeed.importer import ImportConfig, ImportResult, import_interactions
from pinfeed.importer.embeddings import hashed_unit_vectors
from pinfeed.validate import validate

T0 = 1_700_000_000
HEADER = ("user_id", "item_id", "timestamp", "event", "dwell_s", "kind")


def write_csv(path: Path, rows: list[tuple], header: tuple[str, ...] = HEADER) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run_import(log: Path, out: Path, **kwargs: object) -> tuple[ImportResult, EventSet]:
    """Import, then check the promises every import keeps."""
    result = import_interactions(log, out, progress=False, **kwargs)
    events = read_event_set(out)
    assert validate(events).ok
    assert result.rows_read == result.rows_imported + result.rows_rejected
    assert result.impressions == events.impressions.num_rows
    return result, events


def seconds_after_t0(stamps: pd.Series) -> pd.Series:
    return (stamps - pd.Timestamp(T0, unit="s", tz="UTC")).dt.total_seconds().astype("int64")


def impressions_by_key(events: EventSet) -> pd.DataFrame:
    frame = events.impressions.to_pandas()
    frame["t"] = seconds_after_t0(frame["event_ts"])
    return frame.set_index(["user_id", "pin_id", "t"]).sort_index()


HAND_LOG = [
    ("u1", "a", T0, "impression", "", ""),  # row 1
    ("u1", "b", T0, "impression", "", ""),  # row 2: same request as row 1
    ("u1", "a", T0, "impression", "", ""),  # row 3: duplicate of row 1
    ("u1", "a", T0 + 5, "closeup", "", ""),
    ("u1", "a", T0 + 6, "click", "12", ""),
    ("u1", "a", T0 + 7, "click", "50", ""),  # second click: duplicate, dwell max 50 -> long click
    ("u1", "b", T0 + 100_000, "save", "", ""),  # > 24 h after b's impression: synthesised
    ("u1", "c", T0 + 200, "long_click", "", ""),  # no impression, no dwell: synthesised, dwell 30
    ("u1", "c", T0 + 205, "closeup", "", ""),  # joins the synthesised impression of row 8
    ("u2", "a", T0 + 50, "impression", "", ""),
    ("u2", "a", T0 + 60, "long_click", "10", ""),  # dwell below 30 s: stays a plain click
    ("u2", "a", T0 + 3600, "conversion", "", ""),
    ("u2", "d", T0 + 10, "conversion", "", "add_to_cart"),  # follows no impression
    ("u2", "a", T0 + 3600, "conversion", "", ""),  # duplicate of row 12
]


def test_engagements_merge_into_impressions_with_hand_computed_counts(tmp_path: Path) -> None:
    result, events = run_import(write_csv(tmp_path / "log.csv", HAND_LOG), tmp_path / "out")
    assert (result.rows_read, result.rows_imported, result.rows_rejected) == (14, 14, 0)
    assert result.duplicates_merged == 3
    assert result.impressions_synthesised == 2
    assert result.long_clicks_below_threshold == 1
    assert (result.impressions, result.conversions, result.users, result.pins) == (5, 2, 2, 4)
    assert result.has_impressions and events.meta.has_impressions
    a, b, c, d = 0, 1, 2, 3  # pins in sorted external-id order; users u1 = 0, u2 = 1
    imp = impressions_by_key(events)
    flags = [
        "closeup",
        "save",
        "click",
        "long_click",
        "click_dwell_s",
        "request_id",
        "position",
        "query_pin_id",
    ]
    expected = {
        (0, a, 0): [True, False, True, True, 50.0, 0, 0, None],
        (0, b, 0): [False, False, False, False, None, 0, 1, None],
        (1, a, 50): [False, False, True, False, 10.0, 1, 0, None],
        (0, c, 200): [True, False, True, True, 30.0, 2, 0, a],
        (0, b, 100_000): [False, True, False, False, None, 3, 0, c],
    }
    assert sorted(imp.index) == sorted(expected)
    for key, values in expected.items():
        got = [None if pd.isna(v) else v for v in imp.loc[key, flags]]
        assert got == values, key
    conv = events.conversions.to_pandas()
    assert conv["pin_id"].tolist() == [d, a]
    assert conv["kind"].tolist() == ["add_to_cart", "checkout"]
    assert pd.isna(conv["request_id"].iloc[0]) and conv["request_id"].iloc[1] == 1
    pins = events.pins.to_pandas()
    assert pins["shoppable"].tolist() == [True, False, False, True]
    users = events.users.to_pandas()
    assert seconds_after_t0(users["created_ts"]).tolist() == [0, 10]
    assert set(users["country"]) == {"unknown"}
    id_map = pq.read_table(tmp_path / "out" / "id_map" / "pins.parquet").to_pylist()
    assert id_map == [{"external_id": x, "id": i} for i, x in enumerate("abcd")]


def test_epoch_and_iso_timestamps_give_the_same_events(tmp_path: Path) -> None:
    epoch = [(u, i, t, e, w, k) for u, i, t, e, w, k in HAND_LOG]
    iso = []
    for n, (u, i, t, e, w, k) in enumerate(epoch):
        stamp = pd.Timestamp(t, unit="s", tz="UTC")
        text = [
            stamp.strftime("%Y-%m-%dT%H:%M:%S"),  # naive means UTC
            stamp.tz_convert("Europe/Paris").isoformat(),
            stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ][n % 3]
        iso.append((u, i, text, e, w, k))
    floats = [(u, i, f"{t}.0", e, w, k) for u, i, t, e, w, k in epoch]
    _, by_epoch = run_import(write_csv(tmp_path / "epoch.csv", epoch), tmp_path / "o1")
    _, by_iso = run_import(write_csv(tmp_path / "iso.csv", iso), tmp_path / "o2")
    _, by_float = run_import(write_csv(tmp_path / "float.csv", floats), tmp_path / "o3")
    assert by_iso.impressions.equals(by_epoch.impressions)
    assert by_float.impressions.equals(by_epoch.impressions)
    assert by_iso.conversions.equals(by_epoch.conversions)


def test_parquet_with_int_ids_imports_like_csv(tmp_path: Path) -> None:
    names = {"u1": 7, "u2": 9, "a": 100, "b": 200, "c": 300, "d": 400}
    frame = pd.DataFrame(HAND_LOG, columns=list(HEADER))
    frame["user_id"] = frame["user_id"].map(names).astype("int64")
    frame["item_id"] = frame["item_id"].map(names).astype("int64")
    frame["dwell_s"] = pd.to_numeric(frame["dwell_s"]).astype("float64")
    frame.to_parquet(tmp_path / "log.parquet")
    frame.to_csv(tmp_path / "log.csv", index=False)
    result, from_parquet = run_import(tmp_path / "log.parquet", tmp_path / "o1")
    _, from_csv = run_import(tmp_path / "log.csv", tmp_path / "o2")
    assert (result.impressions, result.conversions, result.duplicates_merged) == (5, 2, 3)
    assert from_parquet.impressions.equals(from_csv.impressions)
    users = pq.read_table(tmp_path / "o1" / "id_map" / "users.parquet")
    assert users.column("external_id").to_pylist() == [7, 9]
    assert str(users.schema.field("external_id").type) == "int64"
    csv_users = pq.read_table(tmp_path / "o2" / "id_map" / "users.parquet")
    assert csv_users.equals(users)


def test_parquet_timestamp_column_naive_means_utc(tmp_path: Path) -> None:
    frame = pd.DataFrame(HAND_LOG[:6], columns=list(HEADER))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s")  # tz-naive
    frame.to_parquet(tmp_path / "log.parquet")
    _, from_parquet = run_import(tmp_path / "log.parquet", tmp_path / "o1")
    _, from_csv = run_import(write_csv(tmp_path / "log.csv", HAND_LOG[:6]), tmp_path / "o2")
    assert from_parquet.impressions.equals(from_csv.impressions)


def test_implicit_feedback_log_has_engaged_rows_stand_for_impressions(tmp_path: Path) -> None:
    rows = [
        ("u1", "a", T0, "click", "40", ""),
        ("u1", "a", T0 + 3, "save", "", ""),  # same (user, item) within the window: one impression
        ("u1", "b", T0 + 10, "closeup", "", ""),
        ("u2", "a", T0 + 20, "click", "", ""),  # no dwell: missing_click_dwell_s
        ("u2", "a", T0 + 2 * 86_400, "click", "5", ""),  # two days later: a new impression
    ]
    config = ImportConfig(missing_click_dwell_s=1.5)
    result, events = run_import(
        write_csv(tmp_path / "log.csv", rows), tmp_path / "out", config=config
    )
    assert not result.has_impressions and not events.meta.has_impressions
    assert result.impressions == result.impressions_synthesised == 4
    assert result.duplicates_merged == 0
    imp = impressions_by_key(events)
    assert imp.loc[(0, 0, 0), ["click", "save", "long_click", "click_dwell_s"]].tolist() == [
        True,
        True,
        True,
        40.0,
    ]
    assert imp.loc[(1, 0, 20), "click_dwell_s"] == 1.5
    assert imp.loc[(1, 0, 2 * 86_400), "query_pin_id"] == 0
    assert imp.loc[(0, 1, 10), "query_pin_id"] == 0


BAD_ROWS = [
    (("u1", "a", "yesterday", "click", "", ""), "timestamp", "unparseable"),
    (("u1", "a", str(T0 * 1000), "click", "", ""), "timestamp", "milliseconds"),
    (("u1", "a", T0, "like", "", ""), "event", "must be one of"),
    (("u1", "a", T0, "click", "-3", ""), "dwell_s", ">= 0"),
    (("u1", "a", T0, "click", "long", ""), "dwell_s", "not a number"),
    (("", "a", T0, "click", "", ""), "user_id", "missing"),
    (("u1", " ", T0, "click", "", ""), "item_id", "missing"),
    (("u1", "a", T0, "conversion", "", "refund"), "kind", "conversion kind"),
    (("u1", "a", T0, "click", "", "", "surplus"), "<line>", "expected 6 columns, got 7"),
]


@pytest.mark.parametrize(("bad", "field", "reason"), BAD_ROWS)
def test_bad_row_stops_the_import_naming_row_field_and_reason(
    tmp_path: Path, bad: tuple, field: str, reason: str
) -> None:
    rows = [HAND_LOG[0], HAND_LOG[1], bad, HAND_LOG[3], bad]
    with pytest.raises(ValidationError) as info:
        import_interactions(write_csv(tmp_path / "log.csv", rows), tmp_path / "out", progress=False)
    error = info.value
    assert error.total == 2
    row, got_field, got_reason = error.problems[0]
    assert (row, got_field) == (3, field)
    assert reason in got_reason
    assert "row 3" in str(error) and "header not counted" in str(error)
    assert not (tmp_path / "out").exists()


def test_skip_bad_writes_rejects_and_imports_the_good_rows(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    write_csv(log, HAND_LOG[:6])
    with log.open("a") as f:
        f.write("u1,a,whenever,click,,\n")  # row 7
        f.write("u1,a,1700000000,click,,,surplus\n")  # row 8: too many fields
        f.write("\n")  # row 9: blank, skipped without a reject
        f.write("u3,a,1700000300,like,,\n")  # row 10
        f.write("u3,e,1700000400,click,20,\n")  # row 11: good
    rejects = tmp_path / "rejects" / "bad.csv"
    result, events = run_import(log, tmp_path / "out", rejects=rejects)
    assert (result.rows_read, result.rows_imported, result.rows_rejected) == (10, 7, 3)
    assert result.users == 2 and result.rejects == rejects
    bad = pd.read_csv(rejects)
    assert list(bad.columns) == [*HEADER, "row_number", "field", "reason"]
    assert bad["row_number"].tolist() == [7, 8, 10]
    assert bad["field"].tolist() == ["timestamp", "<line>", "event"]
    assert bad["timestamp"].iloc[0] == "whenever"
    assert "expected 6 columns, got 7" in bad["reason"].iloc[1]
    assert events.impressions.num_rows == 3  # u1 a, u1 b, synthesised u3 e


def test_skip_bad_with_every_row_bad_still_fails(tmp_path: Path) -> None:
    log = write_csv(tmp_path / "log.csv", [("u1", "a", "never", "click", "", "")])
    with pytest.raises(ValidationError):
        import_interactions(log, tmp_path / "out", rejects=tmp_path / "bad.csv", progress=False)
    assert (tmp_path / "bad.csv").exists()


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    log = write_csv(
        tmp_path / "log.csv", [("u1", "a", T0)], header=("user_id", "item_id", "timestamp")
    )
    with pytest.raises(SchemaError, match=r"missing required column\(s\) \['event'\]"):
        import_interactions(log, tmp_path / "out", progress=False)


def _two_group_log(seed: int = 0) -> list[tuple]:
    """Users 0-29 engage only items g0-*, users 30-59 only g1-*; plus one item seen once."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(60):
        group = user // 30
        for item in rng.choice(8, size=4, replace=False):
            rows.append(
                (f"user{user}", f"g{group}-{item}", T0 + user * 60 + int(item), "click", "40", "")
            )
    rows.append(("user0", "lonely", T0 + 9_999, "save", "", ""))
    return rows


def test_learned_embeddings_put_co_engaged_items_closer(tmp_path: Path) -> None:
    config = ImportConfig(embedding_dim=8, n_topics=2)
    result, events = run_import(
        write_csv(tmp_path / "log.csv", _two_group_log()), tmp_path / "out", config=config
    )
    assert (result.embeddings_learned, result.embeddings_fallback) == (16, 1)
    external = (
        pq.read_table(tmp_path / "out" / "id_map" / "pins.parquet")
        .column("external_id")
        .to_pylist()
    )
    pins = events.pins.to_pandas()
    vectors = np.stack(pins["content_embedding"].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    group = np.array([-1 if x == "lonely" else int(x[1]) for x in external])
    cosine = vectors @ vectors.T
    same = (group[:, None] == group[None, :]) & (group[:, None] >= 0)
    across = (group[:, None] != group[None, :]) & (group[:, None] >= 0) & (group[None, :] >= 0)
    assert cosine[same].min() > cosine[across].max()
    topics = pins["topic"].to_numpy()
    assert topics[group == -1].tolist() == [-1]
    assert len(set(topics[group == 0])) == 1 and len(set(topics[group == 1])) == 1
    assert set(topics[group == 0]) != set(topics[group == 1])
    np.testing.assert_allclose(
        vectors[group == -1][0], hashed_unit_vectors(pd.Index(["lonely"]), 8)[0]
    )


def test_given_item_embeddings_override_learned_ones(tmp_path: Path) -> None:
    given = pd.DataFrame(
        {"item_id": ["g0-1", "not-in-log"], "embedding": [[1.0] + [0.0] * 7, [0.0] * 8]}
    )
    given.to_parquet(tmp_path / "emb.parquet")
    config = ImportConfig(embedding_dim=8, item_embeddings=tmp_path / "emb.parquet")
    result, events = run_import(
        write_csv(tmp_path / "log.csv", _two_group_log()), tmp_path / "out", config=config
    )
    assert (result.embeddings_given, result.embeddings_learned) == (1, 15)
    external = (
        pq.read_table(tmp_path / "out" / "id_map" / "pins.parquet")
        .column("external_id")
        .to_pylist()
    )
    vector = events.pins.column("content_embedding")[external.index("g0-1")].as_py()
    assert vector == [1.0] + [0.0] * 7
    wrong = ImportConfig(embedding_dim=4, item_embeddings=tmp_path / "emb.parquet")
    with pytest.raises(SchemaError, match="embedding_dim"):
        import_interactions(tmp_path / "log.csv", tmp_path / "o2", config=wrong, progress=False)


def test_movielens_shaped_ratings_import_as_clicks(tmp_path: Path) -> None:
    """A MovieLens-like ratings file (userId, movieId, rating, timestamp) turned into click
    events whose dwell grows with the rating; ratings >= 3 become long clicks at 30 s."""
    rng = np.random.default_rng(7)
    n = 2_000
    ratings = pd.DataFrame(
        {
            "userId": rng.integers(1, 101, n),
            "movieId": rng.choice(np.arange(1, 3000, 7), n),
            "rating": rng.choice(np.arange(0.5, 5.5, 0.5), n),
            "timestamp": T0 + rng.integers(0, 90 * 86_400, n),
        }
    ).drop_duplicates(["userId", "movieId"])
    log = pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"],
            "timestamp": ratings["timestamp"],
            "event": "click",
            "dwell_s": ratings["rating"] * 10.0,
        }
    )
    log.to_csv(tmp_path / "ratings.csv", index=False)
    result, events = run_import(
        tmp_path / "ratings.csv", tmp_path / "out", config=ImportConfig(embedding_dim=16)
    )
    assert result.rows_imported == len(log) and result.duplicates_merged == 0
    assert not result.has_impressions
    assert result.impressions == len(log)
    assert result.users == log["user_id"].nunique() and result.pins == log["item_id"].nunique()
    imp = events.impressions.to_pandas()
    assert imp["long_click"].sum() == int((ratings["rating"] >= 3).sum())
    assert imp["query_pin_id"].isna().sum() == result.users
    assert result.embeddings_learned > 0
