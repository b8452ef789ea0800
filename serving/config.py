"""Typed configuration of the serving app: loaded once at the edge (`serve run` args, the
`pinfeed serve` command, tests) and passed to every deployment's constructor.

Three layers, as Ray Serve splits them:
- `ServingConfig`: what the app does (which stores, how many candidates, how queries are drawn,
  batching). It is the `args:` block of `serving/config.yaml`.
- `ActiveModels`: which run and which utility weights are served. It is the `user_config` of
  the Recommender and Ranker deployments, so changing it (`/admin/reload`, or `serve deploy`
  of an edited config) reaches every replica on every node through Serve's `reconfigure`,
  without a restart.
- `DeploymentSettings`: how each deployment is placed and scaled (replicas, concurrency,
  CPUs/GPUs). It is the `deployments:` block, the one Serve itself reads on `serve run`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from pinfeed.artifacts.layout import LATEST, RUN_ID_PATTERN, check_run_id
from pinfeed.config import FrozenModel, read_yaml, validate_model
from pinfeed.connection import redis_url_from_env
from pinfeed.errors import ConfigError
from pinfeed.home import ProjectHome
from pinfeed.query_selection import SelectionConfig
from pinfeed.utility import UtilityWeights

APP_NAME = "pinfeed"
ADMIN_TOKEN_ENV = "PINFEED_ADMIN_TOKEN"
DEPLOYMENT_NAMES = ("Ingress", "Recommender", "Ranker", "FeedbackSink")
LOOPBACK = "127.0.0.1"


class RankerBatching(FrozenModel):
    """`@serve.batch` of the ranker: requests (each ~`candidates` rows) merged per ORT call;
    and when the Recommender stops waiting for the Ranker deployment and ranks in-process."""

    max_batch_size: int = Field(8, ge=1, le=256, description="requests per ORT call")
    batch_wait_timeout_s: float = Field(0.002, ge=0, le=1, description="wait to fill a batch")
    intra_op_threads: int = Field(1, ge=0, description="ORT threads per replica (0: ORT default)")
    local_after_s: float = Field(
        1.0,
        gt=0,
        le=10,
        description="rank in the Recommender, with the same run's model, when the Ranker "
        "deployment has not answered within this long or its replica was lost",
    )
    local_for_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="after that, keep ranking in the Recommender this long before one request "
        "tries the Ranker again",
    )


class ServingConfig(FrozenModel):
    """What the serving app serves and how (see the module docstring)."""

    home: Path = Field(
        default_factory=lambda: ProjectHome.from_env().root,
        validate_default=True,
        description="project home: feature_repo/, data/, artifacts/; default $PINFEED_HOME, "
        "else the working directory of the process that builds the app (the same rule as "
        "every pinfeed command's --home)",
    )
    run_id: str = Field(
        LATEST,
        pattern=RUN_ID_PATTERN,
        description="run served at deploy (`latest`: the newest run holding both models)",
    )
    redis_url: str | None = Field(
        None,
        description="online store, feedback, served log and credit ledger on Redis; default "
        "$REDIS_URL of each serving process (pinfeed.connection), neither: SQLite and local "
        "files. Prefer the variable: a URL here (with its password) is stored in Serve's config",
    )
    state_dir: Path | None = Field(
        None, description="where the local feedback log lives (default data/serving)"
    )
    store_timeout_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Redis connect and read timeout of every serving read and write",
    )
    store_breaker_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="after a failed online read, answer degraded without trying the store "
        "for this long (then one read probes it)",
    )
    allow_empty_store: bool = Field(
        False,
        description="deploy even when a view serving reads has no values online (answers are "
        "then flagged degraded and /healthz says why); default: refuse, naming the fix",
    )
    selection: SelectionConfig = SelectionConfig()
    candidates: int = Field(500, ge=1, le=5000, description="candidates ranked per request")
    popular_pins: int = Field(500, ge=1, description="cold-start / degraded candidate pool")
    cache_refresh_s: float = Field(
        30.0, gt=0, description="how often the pin feature cache checks for a materialisation"
    )
    reward_window_s: float = Field(
        86400.0, gt=0, description="engagements later than this after serving earn no reward"
    )
    served_queue: int = Field(
        50_000,
        ge=1,
        description="served items waiting for the served log per Recommender replica; beyond "
        "it answers go unrecorded and are counted (the overload rule, serving.stages.served)",
    )
    feature_log_queue: int = Field(
        1000,
        ge=1,
        description="answered requests waiting for Feast feature logging per Recommender "
        "replica; beyond it their vectors are dropped and counted (serving.stages.feature_log)",
    )
    feature_log_flush_s: float = Field(
        2.0, gt=0, le=600, description="how often logged feature vectors are written"
    )
    unmatched_wait_s: float = Field(
        2.0,
        ge=0,
        le=10,
        description="how long feedback naming an item not yet in the served log waits for it "
        "(the answer's record may still be on its way) before it counts as unmatched",
    )
    retriever_threads: int = Field(1, ge=0, description="ORT threads of the query tower")
    ranker: RankerBatching = RankerBatching()
    admin_token_env: str = Field(ADMIN_TOKEN_ENV, description="env var holding the admin token")
    admin_token_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the admin token; `pinfeed serve` sets it from the deploying "
        "shell's $PINFEED_ADMIN_TOKEN (the token itself never enters a config)",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        """Resolved where the config is read (the driver): replicas have their own cwd."""
        return home.expanduser().resolve()

    @property
    def project(self) -> ProjectHome:
        return ProjectHome(self.home)

    @property
    def store_url(self) -> str | None:
        """The Redis URL this process uses (`redis_url`, else $REDIS_URL), None for SQLite."""
        return redis_url_from_env(self.redis_url)

    @property
    def state(self) -> Path:
        return self.state_dir or self.project.data / "serving"

    @property
    def attribution_ttl_s(self) -> float:
        """How long Redis keeps a served item for attribution: twice the reward window."""
        return 2 * self.reward_window_s


class ServedRun(FrozenModel):
    """The Ranker's `user_config`: the run whose ranker it loads ahead of requests."""

    run_id: str = Field(description="a concrete run id (never `latest`)")

    @field_validator("run_id")
    @classmethod
    def _concrete(cls, run_id: str) -> str:
        return check_run_id(run_id)


class ActiveModels(ServedRun):
    """The Recommender's `user_config`: the run and the utility weights every replica serves."""

    utility: UtilityWeights | None = Field(
        None, description="utility weights; None: the run's own utility.json"
    )
    requested_at: datetime | None = Field(
        None,
        description="when a reload asked for these models: a new value makes every replica "
        "re-read the run's utility.json even when nothing else changed",
    )

    def served_run(self) -> ServedRun:
        return ServedRun(run_id=self.run_id)


ServedRunT = TypeVar("ServedRunT", bound=ServedRun)


def user_configs(models: ActiveModels) -> dict[str, dict[str, Any]]:
    """Deployment name -> its `user_config` for `models`: the Ranker only needs the run, so a
    weights-only reload leaves its replicas alone."""
    return {
        "Recommender": models.model_dump(mode="json"),
        "Ranker": models.served_run().model_dump(mode="json"),
    }


def parse_user_config(model: type[ServedRunT], user_config: dict[str, Any] | None) -> ServedRunT:
    """A deployment's `user_config` as `model` (errors name the field)."""
    if user_config is None:
        raise ConfigError("user_config: the model deployments need at least {run_id}")
    return validate_model(model, user_config, "user_config")


class ActorOptions(FrozenModel):
    """The subset of Ray actor options we set per deployment."""

    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class Autoscaling(FrozenModel):
    """Serve's `autoscaling_config`: the fields pinfeed reads are checked here, any other of
    Serve's keys (`look_back_period_s`, ...) passes through to Serve, which validates it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    min_replicas: int = Field(1, ge=0)
    initial_replicas: int | None = Field(None, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        start = self.min_replicas if self.initial_replicas is None else self.initial_replicas
        if not self.min_replicas <= start <= self.max_replicas:
            raise ValueError("needs min_replicas <= initial_replicas <= max_replicas")
        return self


class DeploymentSettings(FrozenModel):
    """Placement and scaling of one deployment (Serve's own field names): a fixed
    `num_replicas` (default 1) or an `autoscaling_config`, not both (Serve refuses both)."""

    name: Literal["Ingress", "Recommender", "Ranker", "FeedbackSink"]
    num_replicas: int | None = Field(None, ge=1)
    autoscaling_config: Autoscaling | None = None
    max_ongoing_requests: int = Field(16, ge=1)
    max_queued_requests: int = Field(-1, ge=-1, description="-1: unbounded; excess gets 503")
    ray_actor_options: ActorOptions = ActorOptions()

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> DeploymentSettings:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self

    @property
    def replicas_at_start(self) -> int:
        """How many replicas Serve starts (what the cluster must have room for at once)."""
        scaling = self.autoscaling_config
        if scaling is None:
            return self.num_replicas or 1
        start = (
            scaling.min_replicas if scaling.initial_replicas is None else scaling.initial_replicas
        )
        return max(start, 1)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        return self.model_dump(exclude={"name"}, exclude_none=True)

    def serve_schema(self) -> dict[str, Any]:
        """This deployment's entry in a Serve config (`deployments:`), as a file would say
        it: no GPU is Serve's default, so a zero `num_gpus` is left out."""
        entry = self.model_dump(mode="json", exclude_none=True)
        if not self.ray_actor_options.num_gpus:
            del entry["ray_actor_options"]["num_gpus"]
        return entry


class ServeFile(FrozenModel):
    """The parts of `serving/config.yaml` pinfeed reads: one application's args and its
    deployments' settings (the Serve CLI reads the same file whole)."""

    args: ServingConfig
    deployments: tuple[DeploymentSettings, ...] = ()
    host: str = Field(LOOPBACK, description="http_options.host: where the proxy listens")
    port: int = Field(8000, ge=1, le=65535, description="http_options.port")
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        description="http_options.request_timeout_s: the proxy's end-to-end limit per request "
        "(a request over it is answered 408 and cancelled)",
    )

    @model_validator(mode="after")
    def _ranker_can_fill_batches(self) -> ServeFile:
        for settings in self.deployments:
            if (
                settings.name == "Ranker"
                and settings.max_ongoing_requests < self.args.ranker.max_batch_size
            ):
                raise ValueError(
                    "deployments.Ranker.max_ongoing_requests must be >= args.ranker."
                    "max_batch_size, else a batch never fills"
                )
        return self

    def settings(self, name: str) -> DeploymentSettings | None:
        return next((d for d in self.deployments if d.name == name), None)


def parse_serving_config(args: dict[str, Any]) -> ServingConfig:
    """Validate `args` (the yaml `args:` block, or `serve run` overrides); errors name fields."""
    return validate_model(ServingConfig, args, "serving config")


def load_serve_file(
    path: Path, *, overrides: dict[str, Any] | None = None, app_name: str = APP_NAME
) -> ServeFile:
    """Read application `app_name` of a Serve config YAML, with `overrides` on its args."""
    raw = read_yaml(path)
    apps = [app for app in raw.get("applications", []) if app.get("name") == app_name]
    if not apps:
        raise ConfigError(f"{path}: applications: no application named {app_name!r}")
    app = apps[0]
    args = {**(app.get("args") or {}), **(overrides or {})}
    http = raw.get("http_options") or {}
    fields = {"args": args, "deployments": app.get("deployments") or []}
    fields |= {key: http[key] for key in ("host", "port", "request_timeout_s") if key in http}
    return validate_model(ServeFile, fields, str(path))
