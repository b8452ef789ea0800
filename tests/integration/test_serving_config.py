"""Serving without Ray: the shipped Serve config validates, configs fit small clusters, the
feedback log is durable and tolerant of a torn line, and serving runs with torch unavailable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from pinfeed.errors import ConfigError
from pinfeed.traffic.feedback_log import LocalFeedbackLog
from pinfeed.traffic.records import FeedbackRecord
from pinfeed.utility import HeadWeights, UtilityWeights
from serving.app import CONFIG_FILE, check_home, fit_to_cluster, requested_cpus
from serving.config import (
    DEPLOYMENT_NAMES,
    ActiveModels,
    load_serve_file,
    parse_serving_config,
    user_configs,
)
from serving.deploy import app_schema, token_digest
from serving.http.errors import HttpError
from serving.http.ingress import authorise

CLUSTER_CONFIG_FILE = CONFIG_FILE.with_name("config.cluster.yaml")


def test_shipped_config_validates_and_fills_batches(tmp_path: Path) -> None:
    serve_file = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path)})
    assert serve_file.args.home == tmp_path.resolve()
    ranker = serve_file.settings("Ranker")
    assert ranker is not None
    assert ranker.max_ongoing_requests >= serve_file.args.ranker.max_batch_size
    # overload is bounded everywhere: every queue has a limit, every request a deadline
    assert {d.name for d in serve_file.deployments} == set(DEPLOYMENT_NAMES)
    assert all(d.max_queued_requests > 0 for d in serve_file.deployments)
    assert serve_file.request_timeout_s == 10


def test_config_typo_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="candiates"):
        load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path), "candiates": 10})


def test_fit_to_cluster_scales_cpus_and_drops_gpus(tmp_path: Path) -> None:
    cluster = load_serve_file(CLUSTER_CONFIG_FILE, overrides={"home": str(tmp_path)})
    assert any(d.ray_actor_options.num_gpus > 0 for d in cluster.deployments)
    fitted = fit_to_cluster(cluster.deployments, cpus=2.0, gpus=0.0)
    assert requested_cpus(fitted) == pytest.approx(1.8)
    assert all(d.ray_actor_options.num_gpus == 0 for d in fitted)
    ratios = [f.ray_actor_options.num_cpus / d.ray_actor_options.num_cpus
              for f, d in zip(fitted, cluster.deployments, strict=True)]  # fmt: skip
    assert max(ratios) == pytest.approx(min(ratios)), "CPU requests keep their proportions"


def test_the_shipped_config_fits_the_default_machine_unchanged(tmp_path: Path) -> None:
    """2 CPUs (this machine, `make run`): `serve run` can place every replica, so `pinfeed
    serve`'s fitting changes nothing and both deploy the same requests."""
    deployments = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path)}).deployments
    assert requested_cpus(deployments) <= 0.9 * 2
    assert fit_to_cluster(deployments, cpus=2.0, gpus=0.0) == deployments
    assert fit_to_cluster(deployments, cpus=1.0, gpus=0.0) != deployments


def test_pinfeed_serve_deploys_what_serve_run_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pinfeed serve == serve run serving/config.yaml` (README): the application pinfeed
    submits (`serving.deploy.app_schema`) against the file as Serve's own schema reads it:
    same import path, route, deployments and http options; the args validate to the same
    ServingConfig once `serve run`'s builder resolves the home the same way."""
    monkeypatch.delenv("PINFEED_ADMIN_TOKEN", raising=False)  # else its digest is added
    raw = yaml.safe_load(CONFIG_FILE.read_text())
    file_schema = ServeDeploySchema.model_validate(raw)
    [file_app] = file_schema.applications
    run_id = "2026-11-01T00-00-00-abc123"
    serve_file = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path), "run_id": run_id})
    submitted = app_schema(serve_file)
    assert (submitted.name, submitted.route_prefix, submitted.import_path) == (
        file_app.name, file_app.route_prefix, file_app.import_path)  # fmt: skip
    as_submitted = [d.model_dump(exclude_unset=True) for d in submitted.deployments]
    as_read = [d.model_dump(exclude_unset=True) for d in file_app.deployments]
    assert as_submitted == as_read
    built_by_serve_run = parse_serving_config(
        {**file_app.args, "home": str(tmp_path), "run_id": run_id}
    )
    assert parse_serving_config(submitted.args) == built_by_serve_run
    http = file_schema.http_options
    assert (serve_file.host, serve_file.port, serve_file.request_timeout_s) == (
        http.host, http.port, http.request_timeout_s)  # fmt: skip
    assert http.host == "127.0.0.1", "loopback unless told otherwise"


def test_the_cluster_config_differs_only_where_its_header_says(tmp_path: Path) -> None:
    """serving/config.cluster.yaml: the same app; only the host and the deployments' sizing."""
    local, cluster = (
        yaml.safe_load(path.read_text()) for path in (CONFIG_FILE, CLUSTER_CONFIG_FILE)
    )
    assert local["http_options"] | {"host": "0.0.0.0"} == cluster["http_options"]
    [local_app], [cluster_app] = local["applications"], cluster["applications"]
    sizing = {"deployments"}
    assert {k: v for k, v in local_app.items() if k not in sizing} == {
        k: v for k, v in cluster_app.items() if k not in sizing}  # fmt: skip
    assert {k: v for k, v in local.items() if k not in ("http_options", "applications")} == {
        k: v for k, v in cluster.items() if k not in ("http_options", "applications")}  # fmt: skip
    ServeDeploySchema.model_validate(cluster)  # Serve's own schema takes it (autoscaling too)
    serve_file = load_serve_file(CLUSTER_CONFIG_FILE, overrides={"home": str(tmp_path)})
    assert serve_file.settings("Recommender").autoscaling_config is not None


def test_home_left_unset_follows_pinfeed_home_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule of every pinfeed command's --home, where the config is built."""
    monkeypatch.setenv("PINFEED_HOME", str(tmp_path / "a"))
    assert load_serve_file(CONFIG_FILE).args.home == (tmp_path / "a").resolve()
    monkeypatch.delenv("PINFEED_HOME")
    monkeypatch.chdir(tmp_path)
    config = load_serve_file(CONFIG_FILE).args
    assert config.home == tmp_path.resolve()
    with pytest.raises(ConfigError, match="PINFEED_HOME"):
        check_home(config)


def test_redis_url_follows_the_environment_unless_the_config_sets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    config = load_serve_file(CONFIG_FILE, overrides={"home": str(tmp_path)}).args
    assert config.store_url is None
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert config.store_url == "redis://127.0.0.1:1/0"
    pinned = config.model_copy(update={"redis_url": "redis://127.0.0.1:2/0"})
    assert pinned.store_url == "redis://127.0.0.1:2/0"


def test_local_log_skips_a_torn_last_line(tmp_path: Path) -> None:
    log = LocalFeedbackLog(tmp_path / "feedback.log")
    record = FeedbackRecord("", 1, 2, "click", "2026-11-01T00:00:00+00:00", None)
    written = log.append([record, record])
    with (tmp_path / "feedback.log").open("a") as stream:
        stream.write('{"event_id": "torn", "request')
    assert [r.event_id for r in log.read_all()] == [r.event_id for r in written]
    assert len({r.event_id for r in written}) == 2


def test_serving_imports_without_torch() -> None:
    """With torch made unimportable, the serving app and its stages still import (Feast only
    soft-imports torch)."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import serving.app, serving.stages.pipeline, serving.deployments.recommender\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch.'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_admin_is_403_without_a_token_at_deploy_and_401_with_a_wrong_one() -> None:
    digest = token_digest("s3cret")
    assert digest and "s3cret" not in digest
    authorise(digest, "s3cret")  # the right token goes ahead
    for token in (None, "wrong"):
        with pytest.raises(HttpError) as refused:
            authorise(digest, token)
        assert refused.value.status == 401 and refused.value.field == ("header", "x-admin-token")
    for token in (None, "s3cret"):  # deployed without the variable: nothing opens admin
        with pytest.raises(HttpError) as disabled:
            authorise(None, token)
        assert disabled.value.status == 403 and "PINFEED_ADMIN_TOKEN" in disabled.value.message
    assert token_digest(None) is None and token_digest("") is None


def test_a_weights_only_reload_leaves_the_ranker_config_as_it_was() -> None:
    """Serve reconfigures only deployments whose `user_config` changed: new weights change the
    Recommender's alone, a new run both."""
    served = user_configs(ActiveModels(run_id="r1"))
    weights = UtilityWeights(
        version="tuned", weights=HeadWeights(closeup=0.1, save=0.2, click=0.3, long_click=0.4)
    )
    reweighted = user_configs(ActiveModels(run_id="r1", utility=weights))
    assert reweighted["Ranker"] == served["Ranker"]
    assert reweighted["Recommender"] != served["Recommender"]
    switched = user_configs(ActiveModels(run_id="r2"))
    assert switched["Ranker"] != served["Ranker"]
