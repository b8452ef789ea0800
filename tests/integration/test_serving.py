"""The serving app as a client meets it: real Ray Serve, real HTTP on loopback, a real project
(tiny world, Feast SQLite online store, ONNX models trained and exported by the training code).

One Serve app for the module, deployed declaratively like `serve run`. Covers: k distinct items
with probabilities in [0, 1] and utilities equal to the weighted sum; train/serve parity (the
served probabilities equal the exported ranker on Feast's own rows); cold start; a weight
reload reordering without restart; a refused run (404 / 409) leaving the served run alone; a
switch to another run under concurrent requests, none failing and each answer naming one run;
bad input -> 4xx naming the field (hand cases, a schemathesis fuzz over the OpenAPI schema, and
1,050 derandomised generated bodies, most of them broken: non-standard number tokens,
truncation, stray bytes, wrong content types); feedback -> realtime reward -> the next
request's query selection; acknowledged feedback surviving a SIGKILL of the feedback replica;
feedback the log cannot take refused with 503; the answer and stage metrics on Ray's
Prometheus page.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from feature_repo.store import open_store
from pinfeed.artifacts.onnx import inference_session
from pinfeed.artifacts.ranker import CONTENT_EMBEDDING, POSITION, TOPIC, read_ranker_manifest
from pinfeed.artifacts.runs import latest_run, load_run
from pinfeed.calibration import calibrate_logits
from pinfeed.home import ProjectHome
from pinfeed.query_selection import SelectionConfig, UserClusters, select_queries
from pinfeed.schema import ENGAGEMENTS, UNKNOWN_TOPIC
from serving.client import get_json
from serving.config import ActiveModels, ServingConfig
from serving.deploy import active_models, replica_pids, shutdown
from serving.stages.active import run_weights
from serving.stages.feedback import FEEDBACK_LOG
from serving.stages.online import read_rows
from tests.support.homes import (
    RUN_ID,
    RUN_ID_B,
    edited_run,
    ranker_reads,
    shared_serving_home,
    users_with_clusters,
)
from tests.support.serving import call, flush_served, post_raw, reload_closeup_only, start_app

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token"
SELECTION = SelectionConfig(policy="reward", n_queries=3, floor=0.05, seed=0)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> ProjectHome:
    return shared_serving_home(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-state")


@pytest.fixture(scope="module")
def base_url(ray_local: None, home: ProjectHome, state_dir: Path) -> Iterator[str]:
    os.environ["PINFEED_ADMIN_TOKEN"] = TOKEN
    config = ServingConfig(
        home=home.root, run_id=RUN_ID, state_dir=state_dir, selection=SELECTION, candidates=200
    )
    # reloads that wait for one another (the lock) may outlast the shipped 10 s deadline
    yield start_app(config, request_timeout_s=60.0)
    shutdown()
    os.environ.pop("PINFEED_ADMIN_TOKEN", None)


def recommend(base_url: str, request_id: int | None = None, **body: Any) -> dict[str, Any]:
    headers = {"x-request-id": str(request_id)} if request_id is not None else {}
    status, answer = call(f"{base_url}/recommend", body, headers)
    assert status == 200, answer
    return answer


def restore(base_url: str, configured: ActiveModels) -> None:
    """Put the module's app back on `configured` (run and weights) where a test, or a
    regression, left it on something else."""
    current = active_models()
    if (current.run_id, current.utility) == (configured.run_id, configured.utility):
        return
    body: dict[str, Any] = {"run_id": configured.run_id}
    if configured.utility is not None:
        body["utility"] = configured.utility.model_dump(mode="json")
    status, answer = call(f"{base_url}/admin/reload", body, {"x-admin-token": TOKEN})
    assert status == 200, answer


def served_weights(home: ProjectHome) -> np.ndarray:
    """[H] the utility weights the app serves (its user_config, else the run's own)."""
    models = active_models()
    weights = models.utility or run_weights(
        home.artifacts / models.run_id / "ranking" / "utility.json"
    )
    return weights.weights.vector()


def test_recommend_returns_k_distinct_scored_items(base_url: str, home: ProjectHome) -> None:
    user = users_with_clusters(home)[0]
    answer = recommend(base_url, user_id=user, k=25)
    pins = [item["pin_id"] for item in answer["items"]]
    assert len(pins) == 25 and len(set(pins)) == 25
    assert not answer["degraded"] and not answer["cold_start"]
    assert answer["model_version"].startswith(f"{RUN_ID}:")
    weights = served_weights(home)
    utilities = []
    for item in answer["items"]:
        probs = np.array([item["probs"][head] for head in ENGAGEMENTS])
        assert np.all((probs >= 0) & (probs <= 1))
        assert item["utility"] == pytest.approx(float(probs @ weights), rel=1e-9, abs=1e-12)
        assert item["source"]["cluster_id"] is not None
        utilities.append(item["utility"])
    assert utilities == sorted(utilities, reverse=True)


def _feast_ref(full_name: str) -> str:
    view, feature = full_name.split("__", 1)
    return f"{view}:{feature}"


def test_served_probabilities_equal_the_offline_ranker_on_the_same_feast_rows(
    base_url: str, home: ProjectHome
) -> None:
    """Train/serve parity, the claim the project exists for: each served item's per-head
    probabilities equal the run's exported ranker (ONNX Runtime) plus the manifest's
    calibration, applied to the rows Feast's own SDK returns for (user, pin) at serve time,
    in the manifest's column order; no serving code builds these inputs."""
    user = users_with_clusters(home)[0]
    items = recommend(base_url, user_id=user, k=20)["items"]
    manifest = read_ranker_manifest(home.artifacts / RUN_ID / "ranking")
    columns = manifest.source_columns
    refs = sorted(
        {_feast_ref(columns[f]) for f in manifest.dense_features if columns[f] != POSITION}
        | {_feast_ref(columns[TOPIC]), _feast_ref(columns[CONTENT_EMBEDDING])}
    )
    store = open_store(home)
    pins = [item["pin_id"] for item in items]
    rows = store.get_online_features(
        features=refs,
        entity_rows=[{"user_id": user, "pin_id": pin} for pin in pins],
        full_feature_names=True,
    ).to_dict()
    dense = np.array(
        [
            [
                0.0 if columns[f] == POSITION  # request-time: every candidate at position 0
                else np.nan if rows[columns[f]][r] is None
                else rows[columns[f]][r]
                for f in manifest.dense_features
            ]
            for r in range(len(pins))
        ],
        dtype=np.float32,
    )  # fmt: skip
    topic = np.array(
        [UNKNOWN_TOPIC if t is None else t for t in rows[columns[TOPIC]]], dtype=np.int64
    )
    content = rows[columns[CONTENT_EMBEDDING]]
    assert all(vector is not None for vector in content), "served pins have content"
    query_pins = [item["source"]["query_pin_id"] for item in items]
    assert all(q is not None for q in query_pins), "a known user's items come from query pins"
    query_content = store.get_online_features(
        features=[_feast_ref(columns[CONTENT_EMBEDDING])],
        entity_rows=[{"pin_id": q} for q in query_pins],
        full_feature_names=True,
    ).to_dict()[columns[CONTENT_EMBEDDING]]
    feed = {
        "dense": dense,
        "topic": topic,
        "pin_embedding": np.array(content, dtype=np.float32),
        "query_embedding": np.array(query_content, dtype=np.float32),
    }
    assert tuple(feed) == manifest.input_names
    session = inference_session(home.artifacts / RUN_ID / "ranking" / manifest.model_file)
    (logits,) = session.run([manifest.output_name], feed)
    offline = calibrate_logits(logits, manifest.calibration_rate_vector())
    served = np.array([[item["probs"][head] for head in manifest.heads] for item in items])
    np.testing.assert_allclose(served, offline, rtol=0, atol=1e-5)
    assert np.ptp(served, axis=0).min() > 1e-4, "items differ: the check compares something"


def test_unknown_user_gets_cold_start_popular_pins(base_url: str, home: ProjectHome) -> None:
    """From the pool of the `popular_pins` most-shown pins (impressions over 30 days, read
    here through Feast's SDK for every pin): a third of the corpus here, so ten pins drawn
    without regard to it would all land inside with a chance of (1/3)^10."""
    answer = recommend(base_url, user_id=2**62, k=10)
    assert answer["cold_start"] and not answer["degraded"]
    assert len({item["pin_id"] for item in answer["items"]}) == 10
    assert all(
        item["source"] == {"cluster_id": None, "query_pin_id": None} for item in answer["items"]
    )
    pins = pq.read_table(home.events / "pins.parquet", columns=["pin_id"])["pin_id"].to_pylist()
    shown = (
        open_store(home)
        .get_online_features(
            features=["pin_features:pin_impressions_30d"],
            entity_rows=[{"pin_id": pin} for pin in pins],
        )
        .to_dict()["pin_impressions_30d"]
    )
    impressions = dict(zip(pins, (0 if v is None else v for v in shown), strict=True))
    pool_size = ServingConfig.model_fields["popular_pins"].default
    assert pool_size <= len(pins) / 2, "a pool this large would make the check vacuous"
    cutoff = sorted(impressions.values(), reverse=True)[pool_size - 1]
    assert all(impressions[item["pin_id"]] >= cutoff for item in answer["items"]), cutoff


def test_context_pin_drives_retrieval(base_url: str) -> None:
    answer = recommend(base_url, user_id=2**62, k=5, context_pin_id=7)
    assert {item["source"]["query_pin_id"] for item in answer["items"]} == {7}
    assert 7 not in {item["pin_id"] for item in answer["items"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": 1, "k": 0}, "k"),
        ({"user_id": 1, "k": 201}, "k"),
        ({"user_id": -1, "k": 5}, "user_id"),
        ({"k": 5}, "user_id"),
        ({"user_id": 1, "k": 5, "colour": "red"}, "colour"),
        ({"user_id": 2**64, "k": 5}, "user_id"),
    ],
)
def test_bad_recommend_input_is_422_naming_the_field(
    base_url: str, body: dict[str, Any], field: str
) -> None:
    status, answer = call(f"{base_url}/recommend", body)
    assert status == 422
    assert any(field in map(str, problem["loc"]) for problem in answer["detail"])


def test_a_feedback_batch_holds_1_to_1000_events(base_url: str) -> None:
    event = {"request_id": 1, "pin_id": 1, "kind": "impression"}
    for events in ([], [event] * 1001):
        status, answer = call(f"{base_url}/feedback", {"events": events})
        assert status == 422, answer
        assert any("events" in map(str, problem["loc"]) for problem in answer["detail"]), answer


def test_reload_weights_reorders_without_restart(base_url: str, home: ProjectHome) -> None:
    user = users_with_clusters(home)[1]
    before = recommend(base_url, request_id=4242, user_id=user, k=30)
    status, refused = call(f"{base_url}/admin/reload", {"run_id": RUN_ID})
    assert status == 401 and refused["detail"][0]["loc"] == ["header", "x-admin-token"]
    status, reloaded = reload_closeup_only(base_url, TOKEN)
    assert status == 200 and reloaded["model_version"].endswith("+closeup-only")
    after = recommend(base_url, request_id=4242, user_id=user, k=30)
    closeups = [item["probs"]["closeup"] for item in after["items"]]
    assert closeups == sorted(closeups, reverse=True)
    assert [i["utility"] for i in after["items"]] == pytest.approx(closeups)
    assert [i["pin_id"] for i in after["items"]] != [i["pin_id"] for i in before["items"]]
    call(
        f"{base_url}/admin/reload",
        {
            "utility": {
                "version": "hand-v1",
                "weights": {"closeup": 0.1, "save": 0.2, "click": 0.3, "long_click": 0.4},
            }
        },
        {"x-admin-token": TOKEN},
    )


def test_reload_resolves_latest_and_refuses_a_missing_run(base_url: str, home: ProjectHome) -> None:
    newest = latest_run(home.artifacts).run_id
    headers = {"x-admin-token": TOKEN}
    served = get_json(f"{base_url}/healthz")["model_version"]
    status, missing = call(f"{base_url}/admin/reload", {"run_id": "no-such-run"}, headers)
    assert status == 404 and missing["detail"][0]["loc"] == ["body", "run_id"], missing
    assert get_json(f"{base_url}/healthz")["model_version"] == served
    status, reloaded = call(f"{base_url}/admin/reload", {"run_id": "latest"}, headers)
    assert status == 200 and reloaded["model_version"].startswith(f"{newest}:"), reloaded
    status, back = call(f"{base_url}/admin/reload", {"run_id": RUN_ID}, headers)
    assert status == 200 and back["model_version"].startswith(f"{RUN_ID}:"), back


def _damage_ranker(run: Path) -> None:
    with (run / "ranking" / "ranker.onnx").open("ab") as model:
        model.write(b"\0")


REFUSED_RUNS = {
    "feature-mismatch": (
        ranker_reads("pin_click_rate_30d", "pin_features__pin_click_rate_7d"),
        ("'pin_click_rate_30d'", "ranking_v1"),
    ),
    "damaged-model": (_damage_ranker, ("ranker.onnx", "SHA-256 differs")),
}


@pytest.mark.parametrize("refused", list(REFUSED_RUNS))
def test_a_refused_run_is_409_naming_the_problem_and_the_served_run_stays(
    base_url: str, home: ProjectHome, refused: str
) -> None:
    """A run the replica's check refuses (a manifest reading a feature ranking_v1 lacks, a
    model file that is not the one its manifest hashed): 409 naming the problem, and the app
    serves what it served before: same model_version in /healthz and in answers, same
    user_config, no reload_error."""
    edit, named = REFUSED_RUNS[refused]
    configured = active_models()
    served = get_json(f"{base_url}/healthz")["model_version"]
    with edited_run(home, f"refused-{refused}", edit) as run_id:
        try:
            status, answer = call(
                f"{base_url}/admin/reload", {"run_id": run_id}, {"x-admin-token": TOKEN}
            )
        finally:  # a regression that took the run must not leave the module's app on it
            restore(base_url, configured)
    assert status == 409 and answer["detail"][0]["loc"] == ["body", "run_id"], answer
    assert all(text in answer["detail"][0]["msg"] for text in named), answer
    health = get_json(f"{base_url}/healthz")
    assert health["model_version"] == served and health["reload_error"] is None, health
    assert active_models() == configured
    user = users_with_clusters(home)[0]
    assert recommend(base_url, user_id=user, k=5)["model_version"] == served


def _break_utility(run: Path) -> None:
    (run / "ranking" / "utility.json").write_text("{not json")


def test_a_switch_that_fails_on_the_replicas_is_rolled_back_and_409(
    base_url: str, home: ProjectHome
) -> None:
    """A run that passes the one-replica check (artifacts, hashes, services, sessions) but
    whose switch fails on the replicas: here its utility.json, which the check does not read,
    is not JSON. The replicas keep their pipeline and report why; the ingress puts the old
    user_config back and answers 409 "rolled back". The app then serves what it served, with
    no reload_error (the rollback switched the replicas back)."""
    configured = active_models()
    served = get_json(f"{base_url}/healthz")["model_version"]
    with edited_run(home, "broken-utility", _break_utility) as run_id:
        try:
            status, answer = call(
                f"{base_url}/admin/reload", {"run_id": run_id}, {"x-admin-token": TOKEN}
            )
            left_on = active_models()
        finally:  # a regression that kept the broken run must not leave the module's app on it
            restore(base_url, configured)
    assert status == 409 and "rolled back" in answer["detail"][0]["msg"], answer
    assert "utility.json" in answer["detail"][0]["msg"], answer
    assert left_on == configured, left_on
    health = get_json(f"{base_url}/healthz")
    assert health["model_version"] == served and health["reload_error"] is None, health
    user = users_with_clusters(home)[0]
    assert recommend(base_url, user_id=user, k=5)["model_version"] == served


def test_reloads_sent_together_are_taken_one_at_a_time(base_url: str, home: ProjectHome) -> None:
    """Two reloads to two different runs at once: each reads the config, switches every
    replica and reads back the served run inside the ingress's lock, so each answers 200 with
    its own run's version and the app ends on one of the two. Interleaved, one would read
    back the other's run and roll back (409) or answer the wrong version."""
    versions = {run: load_run(home.artifacts, run).version for run in (RUN_ID, RUN_ID_B)}
    headers = {"x-admin-token": TOKEN}
    configured = active_models()
    try:
        for runs in ((RUN_ID_B, RUN_ID), (RUN_ID, RUN_ID_B)):
            barrier = threading.Barrier(len(runs))

            def reload(run: str, barrier: threading.Barrier = barrier) -> tuple[int, Any]:
                barrier.wait()
                return call(f"{base_url}/admin/reload", {"run_id": run}, headers)

            with ThreadPoolExecutor(len(runs)) as pool:
                answers = dict(zip(runs, pool.map(reload, runs), strict=True))
            for run, (status, answer) in answers.items():
                assert status == 200, (run, answer)
                assert answer["model_version"].startswith(f"{versions[run]}+"), answer
            final = get_json(f"{base_url}/healthz")["model_version"]
            assert final in {answer["model_version"] for _, answer in answers.values()}, final
    finally:
        restore(base_url, configured)


def test_switching_runs_under_load_fails_no_request_and_mixes_no_runs(
    base_url: str, home: ProjectHome
) -> None:
    """Clients keep asking while `/admin/reload` switches to another run and back: every
    request answers 200, each answer names exactly one of the two runs, and after each switch
    the answers name the new run."""
    versions = {run: load_run(home.artifacts, run).version for run in (RUN_ID, RUN_ID_B)}
    assert versions[RUN_ID] != versions[RUN_ID_B]
    user = users_with_clusters(home)[0]
    stop = threading.Event()
    answers: list[str] = []
    failures: list[tuple[int, Any]] = []

    def client() -> None:
        while not stop.is_set():
            status, body = call(f"{base_url}/recommend", {"user_id": user, "k": 10})
            if status == 200:
                answers.append(body["model_version"])
            else:
                failures.append((status, body))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for run in (RUN_ID_B, RUN_ID):
            status, reloaded = call(
                f"{base_url}/admin/reload", {"run_id": run}, {"x-admin-token": TOKEN}
            )
            assert status == 200, reloaded
            assert reloaded["model_version"].startswith(versions[run] + "+")
            # Each client has at most one request in flight that began before the answer:
            # past len(threads) more answers, every one began after the switch.
            after = len(answers) + len(threads) + 1
            deadline = time.monotonic() + 30
            while len(answers) < after and time.monotonic() < deadline:
                time.sleep(0.1)
            assert answers[after - 1 :], f"no answers after the switch to {run}"
            assert all(v.startswith(versions[run] + "+") for v in answers[after - 1 :])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:3]
    served = {version.split("+", 1)[0] for version in answers}
    assert served == set(versions.values())


def _expected_clusters(home: ProjectHome, user: int, request_id: int) -> set[int]:
    """The selection serving must make for (user, request_id), from the online store now."""
    store = open_store(home)
    row = read_rows(
        store,
        [
            "user_clusters:cluster_ids",
            "user_clusters:medoid_pin_ids",
            "user_clusters:cluster_importance",
        ],
        "user_id",
        [user],
    )
    ids = np.asarray(row["user_clusters__cluster_ids"][0], dtype=np.int64)
    rewards = read_rows(
        store,
        ["cluster_reward:reward", "cluster_reward:reward_has_data"],
        "cluster_id",
        ids.tolist(),
    )
    reward = np.array(
        [
            r if r is not None and d else np.nan
            for r, d in zip(
                rewards["cluster_reward__reward"],
                rewards["cluster_reward__reward_has_data"],
                strict=True,
            )
        ],
        dtype=np.float64,
    )
    clusters = UserClusters(
        ids,
        np.asarray(row["user_clusters__medoid_pin_ids"][0]),
        np.asarray(row["user_clusters__cluster_importance"][0]),
    )
    return set(select_queries(request_id, clusters, reward, SELECTION).cluster_ids.tolist())


def test_feedback_reward_changes_next_selection(base_url: str, home: ProjectHome) -> None:
    user = users_with_clusters(home, minimum=3)[0]
    first = recommend(base_url, request_id=11, user_id=user, k=200)
    flush_served()
    assert {i["source"]["cluster_id"] for i in first["items"]} <= _expected_clusters(
        home, user, 11
    ) | {None}
    favourite = first["items"][-1]["source"]["cluster_id"]
    events = [
        {"request_id": 11, "pin_id": item["pin_id"], "kind": kind}
        for item in first["items"]
        for kind in (
            ("impression", "long_click")
            if item["source"]["cluster_id"] == favourite
            else ("impression",)
        )
    ]
    left_out = [r for r in range(100, 200) if favourite not in _expected_clusters(home, user, r)]
    assert left_out, "every request id drew the favourite cluster even before the push"
    status, accepted = call(f"{base_url}/feedback", {"events": events})
    assert status == 202 and accepted["accepted"] == len(events) and accepted["applied"]
    hits = 0
    for rid in left_out[:5]:
        expected = _expected_clusters(home, user, rid) | {None}  # None: popular back-fill
        answer = recommend(base_url, request_id=rid, user_id=user, k=200)
        served = {item["source"]["cluster_id"] for item in answer["items"]}
        assert served <= expected
        hits += favourite in served
    assert hits >= 3


def test_feedback_survives_sigkill_of_its_replica(base_url: str, home: ProjectHome) -> None:
    from ray import serve

    user = users_with_clusters(home)[2]
    answer = recommend(base_url, user_id=user, k=5)
    ids: list[str] = []
    for item in answer["items"]:
        status, accepted = call(
            f"{base_url}/feedback",
            {"request_id": answer["request_id"], "pin_id": item["pin_id"], "kind": "impression"},
        )
        assert status == 202
        ids += accepted["event_ids"]
    sink = serve.get_deployment_handle("FeedbackSink", app_name="pinfeed")
    pid = sink.pid.remote().result()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 180  # a ceiling: the loop ends as soon as the new replica answers
    while True:
        try:
            if sink.pid.remote().result(timeout_s=10) != pid:
                break
        except Exception:  # the dead replica's calls fail until Serve replaces it
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
    recorded = {record.event_id for record in sink.recorded.remote().result()}
    assert set(ids) <= recorded
    assert recommend(base_url, user_id=user, k=5)["items"]


def test_a_killed_ranker_costs_no_answer_and_changes_no_score(
    base_url: str, home: ProjectHome
) -> None:
    """SIGKILL of the only Ranker replica: until Serve replaces it, the Recommender ranks with
    its own session of the same run, so every request meanwhile answers 200, with the items
    and probabilities it had before, and the fallback is counted."""
    from ray import serve

    def ranked_locally() -> int:
        status = recommender.status.remote().result(timeout_s=30)
        return sum(v for k, v in status.items() if k.startswith("answers_ranked_locally_"))

    user = users_with_clusters(home)[3]
    before = recommend(base_url, request_id=6161, user_id=user, k=10)
    recommender = serve.get_deployment_handle("Recommender", app_name="pinfeed")
    local_before = ranked_locally()
    [pid] = replica_pids("Ranker")
    os.kill(pid, signal.SIGKILL)
    during = [recommend(base_url, request_id=6161, user_id=user, k=10) for _ in range(4)]
    assert ranked_locally() > local_before
    for answer in during:
        assert [i["pin_id"] for i in answer["items"]] == [i["pin_id"] for i in before["items"]]
        for got, want in zip(answer["items"], before["items"], strict=True):
            assert got["probs"] == pytest.approx(want["probs"], rel=1e-5, abs=1e-7)
    deadline = time.monotonic() + 180  # the later tests want their Ranker back
    while replica_pids("Ranker") in ([], [pid]):
        assert time.monotonic() < deadline, "Serve did not replace the Ranker replica"
        time.sleep(0.5)


def test_feedback_the_log_cannot_take_is_503_and_not_recorded(
    base_url: str, state_dir: Path
) -> None:
    """The local feedback log's path taken by a folder (unwritable, even for root): the event
    is refused with 503 + Retry-After rather than acknowledged, and the log holds what it held;
    once the log can be written, the same event is taken."""
    from ray import serve

    sink = serve.get_deployment_handle("FeedbackSink", app_name="pinfeed")
    before = [record.event_id for record in sink.recorded.remote().result()]
    event = {"request_id": 5, "pin_id": 1, "kind": "click"}
    log = state_dir / FEEDBACK_LOG
    kept = state_dir / "feedback.kept"
    had_log = log.exists()
    if had_log:
        log.rename(kept)
    log.mkdir()
    try:
        status, refused, headers = post_raw(f"{base_url}/feedback", json.dumps(event).encode())
    finally:
        log.rmdir()
        if had_log:
            kept.rename(log)
    assert status == 503 and headers.get("retry-after") == "1", refused
    assert "not recorded" in refused["detail"][0]["msg"], refused
    assert [record.event_id for record in sink.recorded.remote().result()] == before
    status, accepted = call(f"{base_url}/feedback", event)
    assert status == 202, accepted
    recorded = [record.event_id for record in sink.recorded.remote().result()]
    assert recorded == before + accepted["event_ids"]


@pytest.mark.parametrize("path", ["/recommend", "/feedback", "/admin/reload"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_5xx(base_url: str, path: str, mode: GenerationMode) -> None:
    """schemathesis cases from the served OpenAPI schema: valid and invalid bodies, headers."""
    operation = schemathesis.openapi.from_url(f"{base_url}/openapi.json")[path]["POST"]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=60)
        assert response.status_code < 500, response.text
        if 400 <= response.status_code < 500:
            detail = response.json()["detail"]
            assert detail and all(problem.get("loc") for problem in detail), response.text

    check()


MALFORMED = [
    pytest.param(b"not json", "application/json", id="not-json"),
    pytest.param(b"", "application/json", id="empty"),
    pytest.param(b'{"user_id": NaN, "k": 5}', "application/json", id="nan"),
    pytest.param(b'{"user_id": 1, "k": Infinity}', "application/json", id="infinity"),
    pytest.param(b'{"user_id": 1e400, "k": -Infinity}', "application/json", id="overflow"),
    pytest.param(
        b'{"request_id": NaN, "pin_id": 1, "kind": "click"}', "application/json", id="nan-feedback"
    ),
    pytest.param(
        b'{"events": [{"request_id": 1, "pin_id": 1, "kind": "click", "dwell_s": NaN}]}',
        "application/json",
        id="nan-batch",
    ),
    pytest.param(b"\xff\xfe\x00{", "application/json", id="not-utf8"),
    pytest.param(b"[" * 100_000, "application/json", id="deep-nesting"),
    pytest.param(b'{"user_id": 1, "k": 5}', "text/plain", id="wrong-content-type"),
    pytest.param(b"user_id=1&k=5", "application/x-www-form-urlencoded", id="form"),
    pytest.param(
        b'{"user_id": 1, "k": 5, "pad": "' + b"x" * (2 << 20) + b'"}',
        "application/json",
        id="oversized",
    ),
]


@pytest.mark.parametrize("path", ["/recommend", "/feedback", "/admin/reload"])
@pytest.mark.parametrize(("data", "content_type"), MALFORMED)
def test_malformed_bodies_are_4xx_naming_the_body(
    base_url: str, path: str, data: bytes, content_type: str
) -> None:
    """Bodies the OpenAPI fuzzing never sends: each is a 4xx in the one error shape, and
    rendering the error never fails on the input it rejects (NaN made FastAPI's own 422 a 500)."""
    status, answer, _ = post_raw(f"{base_url}{path}", data, content_type)
    assert 400 <= status < 500, (status, answer)
    assert answer is not None and answer["detail"], answer
    assert all(problem["loc"] and problem["msg"] for problem in answer["detail"]), answer
    if len(data) > 1 << 20:
        assert status == 413 and answer["detail"][0]["loc"] == ["body"], answer


FIELDS = {
    "/recommend": ["user_id", "k", "context_pin_id", "exclude_seen"],
    "/feedback": ["request_id", "pin_id", "kind", "event_ts", "user_id", "dwell_s", "events"],
    "/admin/reload": ["run_id", "utility"],
}
TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400, b"0x10", b"True",
          b"'x'", b"undefined", b"\x00", b"\xff\xfe", b"\\ud800", b"{", b"]"]  # fmt: skip
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "",
]
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["click", "save", "hide", "long_click", "2026-11-25T10:00:00Z", "latest"])
)
JSON_VALUE = st.recursive(
    LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def fuzzed_body(draw: st.DrawFn, path: str) -> tuple[bytes, str]:
    """A body for `path`: a JSON object over the route's own field names (and stray ones) with
    any JSON values, then maybe broken: a non-standard token spliced in for a value, cut short,
    raw bytes inserted, or wrapped in a list; sent with one of several content types."""
    names = st.sampled_from(FIELDS[path]) | st.text(max_size=6)
    raw = json.dumps(draw(st.dictionaries(names, JSON_VALUE, max_size=5))).encode()
    mutation = draw(st.sampled_from(["none", "token", "truncate", "bytes", "wrap"]))
    cut = draw(st.integers(min_value=0, max_value=len(raw)))
    if mutation == "token" and b": " in raw[cut:]:
        at = raw.index(b": ", cut) + 2
        raw = raw[:at] + draw(st.sampled_from(TOKENS)) + raw[at:]
    elif mutation == "truncate":
        raw = raw[:cut]
    elif mutation == "bytes":
        raw = raw[:cut] + draw(st.binary(min_size=1, max_size=16)) + raw[cut:]
    elif mutation == "wrap":
        raw = b"[" + raw + b"]"
    return raw, draw(st.sampled_from(CONTENT_TYPES))


def parses(data: bytes) -> bool:
    """Does a JSON parser read `data` at all (Python's accepts NaN and Infinity, as
    Starlette's does)?"""
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


FUZZ_CASES = 350
"""Per route: with the schemathesis cases above, over 1,000 generated requests in all."""


@pytest.mark.parametrize("path", ["/recommend", "/feedback", "/admin/reload"])
def test_fuzzed_bodies_never_5xx(base_url: str, path: str) -> None:
    """Generated bodies (derandomised: the same cases every run), about four in five of them
    broken: never a 5xx, every 4xx names where the problem is, and a body sent as JSON that is
    not JSON is a 4xx (not a 2xx from some lenient parse)."""
    seen: list[int] = []
    unparseable: list[int] = []

    @given(case=fuzzed_body(path))
    @settings(
        max_examples=FUZZ_CASES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: tuple[bytes, str]) -> None:
        data, content_type = case
        status, answer, _ = post_raw(f"{base_url}{path}", data, content_type)
        seen.append(status)
        assert status < 500, (data[:200], content_type, status, answer)
        if content_type.startswith("application/json") and not parses(data):
            unparseable.append(status)
            assert 400 <= status < 500, (data[:200], content_type, status, answer)
        if status >= 400:
            assert answer is not None and answer["detail"], (data[:200], status, answer)
            assert all(problem["loc"] for problem in answer["detail"]), answer

    check()
    assert len(seen) >= FUZZ_CASES * 0.9  # Hypothesis ran (nearly) the asked number of cases
    assert len(unparseable) >= FUZZ_CASES // 10  # the broken-JSON path was exercised


def test_openapi_docs_served(base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/docs", timeout=10) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as answer:
        paths = json.loads(answer.read())["paths"]
    assert {"/recommend", "/feedback", "/admin/reload", "/healthz"} <= set(paths)


def prometheus_samples(page: str, name: str) -> dict[str, float]:
    """{label text: value} of metric `name`'s samples on a Prometheus text page."""
    samples = {}
    for line in page.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            samples[labels] = float(value)
    return samples


STAGES = ("prepare", "rank", "finish")


def metrics_page(port: int) -> str:
    """Ray's Prometheus page ("" while it cannot be read yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            return answer.read().decode()
    except OSError:
        return ""


def metric_totals(port: int) -> tuple[dict[str, float], dict[str, float]]:
    """({kind: answers}, {stage: observations}) of the Recommender on Ray's Prometheus page
    (zeros while the page cannot be read yet)."""
    page = metrics_page(port)
    answers = prometheus_samples(page, "ray_pinfeed_answers_total")
    stages = prometheus_samples(page, "ray_pinfeed_stage_ms_count")
    assert all('deployment="Recommender"' in labels for labels in {**answers, **stages})

    def by(label: str, samples: dict[str, float], values: tuple[str, ...]) -> dict[str, float]:
        return {v: sum(n for key, n in samples.items() if f'{label}="{v}"' in key) for v in values}

    return by("kind", answers, ("ok", "cold_start")), by("stage", stages, STAGES)


def settled_totals(
    port: int, quiet_s: float = 12.0, ceiling_s: float = 120.0
) -> tuple[dict[str, float], dict[str, float]]:
    """The totals once what earlier tests' requests pushed has all reached the page: unchanged
    for `quiet_s` (longer than Ray's 10 s metrics report interval), else fail at `ceiling_s`."""
    deadline = time.monotonic() + ceiling_s
    last, since = metric_totals(port), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"metrics never settled: {last}"
        time.sleep(1.0)
        now = metric_totals(port)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_request_metrics_reach_prometheus(base_url: str, home: ProjectHome) -> None:
    """The answer and stage metrics an operator's dashboard reads are on Ray's Prometheus page,
    and move with traffic: an ok and a cold-start answer sent here raise their counters and
    every stage's histogram count."""
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    answers_before, stages_before = settled_totals(port)
    recommend(base_url, user_id=users_with_clusters(home)[0], k=5)
    recommend(base_url, user_id=2**62, k=5)
    deadline = time.monotonic() + 90.0
    while True:
        answers, stages = metric_totals(port)
        grew = all(answers.get(k, 0) > answers_before.get(k, 0) for k in ("ok", "cold_start"))
        timed = all(stages.get(s, 0) >= stages_before.get(s, 0) + 2 for s in STAGES)
        if grew and timed:
            break
        assert time.monotonic() < deadline, (answers_before, answers, stages_before, stages)
        time.sleep(2.0)
    # the store check behind /healthz records each serving view's feature age
    get_json(f"{base_url}/healthz")
    while not (ages := prometheus_samples(metrics_page(port), "ray_pinfeed_feature_age_seconds")):
        assert time.monotonic() < deadline + 60, "no pinfeed_feature_age_seconds on the page"
        time.sleep(2.0)
    assert all('view="' in labels for labels in ages) and all(age >= 0 for age in ages.values())
