"""Served traffic closes the loop, through real Serve, HTTP and the SQLite online store:
every answer lands in the served log; feedback is credited through it by two FeedbackSink
replicas exactly as one writer would credit it, also after the replicas are killed; a hide
lowers its cluster's reward and draws; unmatched feedback says so; and the ingested traffic
reconciles and recomputes offline to what realtime accumulated.

The module's app runs two FeedbackSink replicas on its own copy of the session's serving home
(it writes served traffic into the home's event set).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo.feature_logging import PRESENT, log_spec, read_logged
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.realtime_rewards import apply_increments, read_reward_counts
from feature_repo.rewards_job import compute_rewards, run_rewards_job
from feature_repo.store import open_store
from pinfeed.attribution import reward_increments
from pinfeed.events import read_event_meta, read_event_set
from pinfeed.home import ProjectHome
from pinfeed.query_selection import SelectionConfig, UserClusters, select_queries
from pinfeed.traffic.served import SERVED_DB, LocalServedLog
from pinfeed_cli import steps
from serving.config import ServingConfig
from serving.deploy import shutdown
from serving.stages.online import read_rows
from tests.support.homes import RUN_ID, shared_serving_home, users_with_clusters
from tests.support.serving import call, flush_served, start_app
from training.training_sets import RANKING_NAME

pytestmark = pytest.mark.slow
SELECTION = SelectionConfig(policy="reward", n_queries=3, floor=0.05, seed=0)
WINDOW = timedelta(days=1)
CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    """A private copy of the serving home, its cluster rewards recomputed offline at the end of
    its events (whatever other modules pushed in realtime is overwritten)."""
    shared = shared_serving_home(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("loop") / "home"
    shutil.copytree(shared.root, root)
    home = ProjectHome(root.resolve())
    steps.apply(home)  # the registry holds absolute source paths: point them at the copy
    run_rewards_job(home, as_of=read_event_meta(home.events).end, store=open_store(home))
    return home


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loop-state")


@pytest.fixture(scope="module")
def base_url(ray_local: None, home: ProjectHome, state_dir: Path) -> Iterator[str]:
    config = ServingConfig(
        home=home.root,
        run_id=RUN_ID,
        state_dir=state_dir,
        selection=SELECTION,
        candidates=200,
        feature_log_flush_s=0.5,
    )
    yield start_app(config, replicas={"FeedbackSink": 2})
    shutdown()


def recommend(base_url: str, request_id: int, user_id: int, k: int = 30) -> dict[str, Any]:
    status, answer = call(
        f"{base_url}/recommend", {"user_id": user_id, "k": k}, {"x-request-id": str(request_id)}
    )
    assert status == 200, answer
    return answer


def post_all(base_url: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event in its own POST, eight at a time (so both sink replicas take some)."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda e: call(f"{base_url}/feedback", e), events))
    assert all(status == 202 for status, _ in answers), answers
    return [body for _, body in answers]


def sink_pids() -> set[int]:
    from ray import serve

    sink = serve.get_deployment_handle("FeedbackSink", app_name="pinfeed")
    return {sink.pid.remote().result(timeout_s=10) for _ in range(30)}


def served_table(answers: list[dict[str, Any]], user_ids: list[int]) -> pd.DataFrame:
    rows = [
        (a["request_id"], i["pin_id"], user, i["source"]["cluster_id"] or -1, -1)
        for a, user in zip(answers, user_ids, strict=True)
        for i in a["items"]
    ]
    frame = pd.DataFrame(rows, columns=["request_id", "pin_id", "user_id", "cluster_id", "q"])
    return frame.rename(columns={"q": "query_pin_id"}).assign(served_ts=pd.Timestamp.now("UTC"))


def events_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Impressions of the cluster-sourced items, a click (with dwell) on every third, a hide
    on every seventh."""
    events = []
    for n, item in enumerate(i for i in answer["items"] if i["source"]["cluster_id"] is not None):
        key = {"request_id": answer["request_id"], "pin_id": item["pin_id"]}
        events.append({**key, "kind": "impression"})
        if n % 3 == 0:
            events.append({**key, "kind": "click", "dwell_s": 40.0})
        if n % 7 == 6:
            events.append({**key, "kind": "hide"})
    return events


def counts(store: Any, users: list[int]) -> pd.DataFrame:
    return read_reward_counts(store, users).set_index(["user_id", "cluster_id"]).sort_index()


def test_two_sink_replicas_credit_like_one_writer_and_offline_agrees(
    base_url: str, home: ProjectHome, state_dir: Path
) -> None:
    store = open_store(home)
    users = users_with_clusters(home)[:4]
    before = counts(store, users)
    answers = [recommend(base_url, 7_000_000 + n, user) for n, user in enumerate(users)]
    flush_served()  # the race of feedback with its answer's record is unmatched_wait_s's job
    events = [event for answer in answers for event in events_of(answer)]
    replies = post_all(base_url, events)
    assert all(r["applied"] and r["unmatched"] == 0 for r in replies)
    assert len(sink_pids()) == 2

    feedback = pd.DataFrame(events).assign(event_ts=pd.Timestamp.now("UTC"))
    credit = reward_increments(served_table(answers, users), feedback, window=WINDOW)
    one_writer = apply_increments(
        before.reset_index(), credit.increments, CONFIG.reward_prior_weight,
        CONFIG.reward_fallback, CONFIG.hide_weight,
    ).set_index(["user_id", "cluster_id"])  # fmt: skip
    after = counts(store, users)
    assert after["reward_impressions"].sum() > before["reward_impressions"].sum()
    pd.testing.assert_frame_equal(after, one_writer.loc[after.index, after.columns])

    logged = LocalServedLog(state_dir / SERVED_DB).lookup(
        [(a["request_id"], i["pin_id"]) for a in answers for i in a["items"]]
    )
    first = answers[0]["items"][1]
    item = logged[(answers[0]["request_id"], first["pin_id"])]
    assert (item.position, item.cluster_id, item.run_id) == (
        1,
        first["source"]["cluster_id"],
        RUN_ID,
    )
    assert item.probabilities[2] == pytest.approx(first["probs"]["click"])

    assert_features_logged(store, answers, users)

    report = steps.ingest_served(home, state_dir=state_dir)
    assert report.reconciles and not report.rejected_impressions
    ingested = read_event_set(home.events).impressions.to_pandas()
    mine = ingested[ingested["request_id"].isin([a["request_id"] for a in answers])]
    assert len(mine) == len({(e["request_id"], e["pin_id"]) for e in events})
    assert mine["hide"].sum() == sum(e["kind"] == "hide" for e in events)

    steps.training_sets(home, seed=0)  # the next run trains on served traffic
    ranking_set = pq.read_table(
        home.training_sets / f"{RANKING_NAME}.parquet", columns=["request_id"]
    )
    assert {a["request_id"] for a in answers} <= set(ranking_set["request_id"].to_pylist())

    since = read_event_meta(home.events).start
    offline, _, _ = compute_rewards(home, since=since, as_of=datetime.now(UTC))
    offline_counts = (
        offline.to_pandas().set_index(["user_id", "cluster_id"]).loc[after.index, after.columns]
    )
    pd.testing.assert_frame_equal(after, offline_counts, check_dtype=False)


def assert_features_logged(store: Any, answers: list[dict[str, Any]], users: list[int]) -> None:
    """Feast's feature log holds one row per served item, with the user features serving read."""
    spec = log_spec(store)
    wanted = {str(a["request_id"]) for a in answers}
    served = sum(len(a["items"]) for a in answers)
    deadline = time.monotonic() + 30
    while True:
        logged = read_logged(spec).to_pandas()
        mine = logged[logged["__request_id"].isin(wanted)]
        if len(mine) >= served or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(mine) == served
    name = "user_features__user_impressions_30d"
    online = read_rows(store, ("user_features:user_impressions_30d",), "user_id", users)
    expected = dict(zip(users, online[name], strict=True))
    assert all(row[name] == expected[row["user_id"]] for _, row in mine.iterrows())
    assert mine["pin_features__pin_click_rate_30d__status"].eq(PRESENT).mean() > 0.9


def draws(store: Any, user: int, cluster: int) -> int:
    """Requests (of 200 request ids) whose query selection draws `cluster` for `user`."""
    row = read_rows(
        store,
        ("user_clusters:cluster_ids", "user_clusters:medoid_pin_ids",
         "user_clusters:cluster_importance"),
        "user_id", [user],
    )  # fmt: skip
    ids = np.asarray(row["user_clusters__cluster_ids"][0], np.int64)
    clusters = UserClusters(
        ids,
        np.asarray(row["user_clusters__medoid_pin_ids"][0], np.int64),
        np.asarray(row["user_clusters__cluster_importance"][0], np.float64),
    )
    rewards = read_rows(store, ("cluster_reward:reward",), "cluster_id", ids.tolist())
    reward = np.array([np.nan if r is None else r for r in rewards["cluster_reward__reward"]])
    return sum(
        cluster in select_queries(rid, clusters, reward, SELECTION).cluster_ids
        for rid in range(200)
    )


def test_hidden_pins_cost_their_cluster_reward_and_draws(base_url: str, home: ProjectHome) -> None:
    store = open_store(home)
    user = users_with_clusters(home, minimum=3)[1]
    answer = recommend(base_url, 7_100_000, user, k=100)
    flush_served()
    sources = pd.Series([i["source"]["cluster_id"] for i in answer["items"]]).dropna()
    cluster = int(sources.value_counts().index[0])
    reward_before = counts(store, [user]).loc[(user, cluster)]
    drawn_before = draws(store, user, cluster)
    hidden = [
        {"request_id": answer["request_id"], "pin_id": i["pin_id"], "kind": "hide"}
        for i in answer["items"]
        if i["source"]["cluster_id"] == cluster
    ]
    status, accepted = call(f"{base_url}/feedback", {"events": hidden})
    assert status == 202 and accepted["applied"]
    reward_after = counts(store, [user]).loc[(user, cluster)]
    assert reward_after["reward_impressions"] == reward_before["reward_impressions"] + len(
        hidden
    ) * (1 + CONFIG.hide_weight)
    assert draws(store, user, cluster) < drawn_before


def test_unmatched_feedback_is_answered_as_such(base_url: str) -> None:
    status, accepted = call(
        f"{base_url}/feedback", {"request_id": 123456789, "pin_id": 1, "kind": "click"}
    )
    assert status == 202 and accepted["unmatched"] == 1 and not accepted["applied"]
    status, refused = call(
        f"{base_url}/feedback", {"request_id": 1, "pin_id": 1, "kind": "save", "dwell_s": 3.0}
    )
    assert status == 422 and "dwell_s" in str(refused)


def test_feedback_after_the_sinks_restart_is_credited_once(
    base_url: str, home: ProjectHome
) -> None:
    store = open_store(home)
    user = users_with_clusters(home)[5]
    answer = recommend(base_url, 7_200_000, user)
    flush_served()
    item = next(i for i in answer["items"] if i["source"]["cluster_id"] is not None)
    cluster = item["source"]["cluster_id"]
    before = counts(store, [user]).loc[(user, cluster)]
    old = sink_pids()
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while True:
        try:
            if not sink_pids() & old:
                break
        except Exception:  # the dead replicas' calls fail until Serve replaces them
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
    click = {"request_id": answer["request_id"], "pin_id": item["pin_id"], "kind": "click"}
    for _ in range(2):  # the replay after the first must not count again
        status, accepted = call(f"{base_url}/feedback", click)
        assert status == 202 and accepted["unmatched"] == 0
    after = counts(store, [user]).loc[(user, cluster)]
    assert after["reward_engagements"] == before["reward_engagements"] + 1
    assert after["reward_impressions"] == before["reward_impressions"] + 1
