"""The ranking training job: fit the multi-task ranker and its single-head baseline on Ray
Train, export the ranker for serving, and record what evaluation needs.

`train_ranking(config, home)` writes `artifacts/<run_id>/ranking/`:

- `ranker.onnx` + `ranker.manifest.json`: four uncalibrated logits, head order, w and the
  per-head effective sample rates of the exact calibration (`pinfeed.calibration`);
- `single_head.pt`: the baseline's config and weights (evaluation only; serving never loads it);
- `utility.json`: the default, hand-picked utility weights (the optimiser replaces them);
- `training_run.json`: the time split, the rates and the last epoch's metrics per model.

Time split (days counted back from the end of the event period): training rows are stamped
before the validation days; the validation days tune the utility weights and the test days
(the last ones) hold the report's un-downsampled impressions.

Entry points: `pinfeed train ranking --config FILE` and `python -m training.job ranking
--config FILE` (for `ray job submit`), both through `main` / `train_ranking`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from pinfeed.calibration import fit_effective_sample_rates, fit_other_engaged_share
from pinfeed.errors import ConfigError, DataNotFoundError
from pinfeed.events import read_event_set
from pinfeed.home import ProjectHome
from pinfeed.schema import ENGAGEMENTS
from pinfeed.utility import default_utility_weights, save_utility_weights
from training.ranking.config import BaselineConfig, LossConfig, RankerConfig, RankingTrainConfig
from training.ranking.export import MODEL_FILE, export_ranker, inference_session, max_parity_gap
from training.ranking.features import SOURCE_COLUMNS, TOPIC, RankerArrays
from training.ranking.ray_loop import (
    TRAIN_DATASET,
    ModelKind,
    RankingLoopConfig,
    build_model,
    prepare_batch,
    ranking_dataset,
    train_loop_per_worker,
)
from training.ray_train import RayTrainSettings, fit, load_result_state
from training.training_sets import RANKING_NAME, read_training_set_meta

RANKING_DIR = "ranking"
RUN_FILE = "training_run.json"
BASELINE_FILE = "single_head.pt"
UTILITY_FILE = "utility.json"
CONFIG_SECTIONS = ("training", "evaluation", "utility")
"""Top-level keys of configs/ranking.yaml; each job validates its own section."""
MAX_PARITY_GAP = 1e-4


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RankerOptions(_Frozen):
    """The ranker's shape minus what the data fixes (embedding length, topic count)."""

    topic_dim: int = Field(8, gt=0)
    hidden_dims: tuple[int, ...] = Field((256, 128), min_length=1)
    head_dim: int = Field(32, ge=0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SplitConfig(_Frozen):
    """Held-out days at the end of the event period (training uses everything before)."""

    validation_days: int = Field(2, ge=1, description="Tune the utility weights on these.")
    test_days: int = Field(2, ge=1, description="The report's un-downsampled impressions.")


class RayOptions(_Frozen):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = Field(None, description="None: use GPUs when the cluster has them.")
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0)


class RankingJobConfig(_Frozen):
    """The `training:` section of configs/ranking.yaml."""

    run_id: str | None = Field(None, description="Artifacts folder name; default: UTC time.")
    model: RankerOptions = RankerOptions()
    loss: LossConfig = LossConfig()
    baseline: BaselineConfig = BaselineConfig()
    learning_rate: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(1024, gt=0)
    epochs: int = Field(5, gt=0)
    seed: int = 0
    split: SplitConfig = SplitConfig()
    ray: RayOptions = RayOptions()


class RankingSplit(_Frozen):
    """[train_end, validation_end) validation, [validation_end, test_end) test."""

    train_end: datetime
    validation_end: datetime
    test_end: datetime


class ModelRun(_Frozen):
    epochs: int
    loss: float
    examples_per_s: float
    checkpoint: str


class RankingRun(_Frozen):
    """training_run.json: what evaluation and the optimiser read about a run."""

    run_id: str
    training_set: str
    train_rows: int
    negative_sample_rate: float
    other_engaged_share: dict[str, float]
    effective_sample_rates: dict[str, float]
    split: RankingSplit
    ranker: RankerConfig
    onnx_parity_gap: float
    models: dict[str, ModelRun]


SectionModel = TypeVar("SectionModel", bound=BaseModel)


def read_config_section(path: Path, section: str) -> dict:
    """One section of a ranking YAML (missing section: {}); unknown top-level keys are refused."""
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such config file (see configs/ranking.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - set(CONFIG_SECTIONS))
    if not isinstance(raw, dict) or unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; use {CONFIG_SECTIONS}")
    return raw.get(section) or {}


def load_config_section(path: Path, section: str, model: type[SectionModel]) -> SectionModel:
    """One section of a ranking YAML validated as `model`; errors name the field
    (`training.epochs: Input should be greater than 0`)."""
    try:
        return model.model_validate(read_config_section(path, section))
    except PydanticValidationError as error:
        problems = "; ".join(
            f"{section}.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"{path}: {problems}") from error


def load_job_config(path: Path) -> RankingJobConfig:
    """The `training:` section of `path`, validated; errors name the field."""
    return load_config_section(path, "training", RankingJobConfig)


def time_split(period_end: datetime, split: SplitConfig) -> RankingSplit:
    test_end = period_end
    validation_end = test_end - timedelta(days=split.test_days)
    return RankingSplit(
        train_end=validation_end - timedelta(days=split.validation_days),
        validation_end=validation_end,
        test_end=test_end,
    )


def ranking_run_dir(home: ProjectHome, run_id: str) -> Path:
    return home.artifacts / run_id / RANKING_DIR


def latest_ranking_run(home: ProjectHome) -> Path:
    """The most recently written `artifacts/<run_id>/ranking/` folder."""
    runs = sorted(
        home.artifacts.glob(f"*/{RANKING_DIR}/{RUN_FILE}"), key=lambda p: p.stat().st_mtime
    )
    if not runs:
        raise DataNotFoundError(
            f"{home.artifacts}: no ranking run; train one with `pinfeed train ranking`"
        )
    return runs[-1].parent


def read_ranking_run(run_dir: Path) -> RankingRun:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise DataNotFoundError(f"{path}: missing; train with `pinfeed train ranking`")
    return RankingRun.model_validate_json(path.read_text())


def load_baseline(run_dir: Path) -> torch.nn.Module:
    """The single-head baseline of a run, in eval mode."""
    saved = torch.load(run_dir / BASELINE_FILE, map_location="cpu", weights_only=False)
    model = build_model("single_head", RankerConfig.model_validate(saved["config"]))
    model.load_state_dict(saved["state"])
    return model.eval()


def initial_state(kind: ModelKind, config: RankerConfig, dense: np.ndarray, seed: int) -> dict:
    """Seeded weights with the normaliser fitted on the training rows [N, F]."""
    torch.manual_seed(seed)
    model = build_model(kind, config)
    model.fit_normalizer(torch.from_numpy(dense))
    return model.state_dict()


def _train_one(
    kind: ModelKind,
    train: RankingTrainConfig,
    job: RankingJobConfig,
    dense: np.ndarray,
    dataset: object,
    storage: Path,
    run_id: str,
) -> tuple[torch.nn.Module, ModelRun]:
    loop = RankingLoopConfig(kind=kind, train=train, importance=job.baseline.importance)
    settings = RayTrainSettings(
        name=f"ranking-{run_id}-{kind}",
        storage_path=storage,
        num_workers=job.ray.num_workers,
        use_gpu=job.ray.use_gpu,
        cpus_per_worker=job.ray.cpus_per_worker,
        max_failures=job.ray.max_failures,
    )
    loop_config = {
        "loop": loop.model_dump(mode="json"),
        "initial_state": initial_state(kind, train.model, dense, train.seed),
    }
    result = fit(train_loop_per_worker, loop_config, {TRAIN_DATASET: dataset}, settings)
    model = build_model(kind, train.model)
    model.load_state_dict(load_result_state(result)["model"])
    metrics = result.metrics or {}
    return model.eval(), ModelRun(
        epochs=int(metrics.get("epoch", 0)),
        loss=float(metrics.get("loss", float("nan"))),
        examples_per_s=float(metrics.get("examples_per_s", float("nan"))),
        checkpoint=str(result.checkpoint.path) if result.checkpoint else "",
    )


def _training_rows(
    path: Path, embedding_dim: int, train_end: datetime
) -> tuple[dict[str, np.ndarray], int]:
    """The training period's rows as batch columns (for the normaliser and the sample rates)
    and the topic count (largest candidate topic id + 1)."""
    frame = pd.read_parquet(path)
    if not (frame["event_timestamp"] < train_end).any():
        raise DataNotFoundError(
            f"{path}: no rows before {train_end.isoformat()}; generate more days or shorten "
            "training.split"
        )
    num_topics = int(frame[SOURCE_COLUMNS[TOPIC]].max()) + 1
    return prepare_batch(frame, embedding_dim, None, train_end), num_topics


def train_ranking(config: RankingJobConfig, home: ProjectHome) -> Path:
    """Train both rankers on `home`'s ranking training set, export; return the run folder."""
    path = home.training_sets / f"{RANKING_NAME}.parquet"
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no ranking training set; run `pinfeed run` first")
    meta = read_training_set_meta(path)
    events = read_event_set(home.events).meta
    split = time_split(events.end.astimezone(UTC), config.split)
    rows, num_topics = _training_rows(path, events.embedding_dim, split.train_end)
    w = float(meta.negative_sample_rate or 1.0)
    ranker = RankerConfig(
        embedding_dim=events.embedding_dim,
        num_topics=num_topics,
        **config.model.model_dump(),
    )
    train = RankingTrainConfig(
        model=ranker,
        loss=config.loss,
        negative_sample_rate=w,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        epochs=config.epochs,
        seed=config.seed,
    )
    run_id = config.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = ranking_run_dir(home, run_id)
    storage = (home.data / "ray_results").resolve()
    dataset = ranking_dataset(path, events.embedding_dim, end=split.train_end)
    trained = {
        kind: _train_one(kind, train, config, rows["dense"], dataset, storage, run_id)
        for kind in ("multi_task", "single_head")
    }
    rates = fit_effective_sample_rates(rows["labels"], w)
    export_ranker(
        trained["multi_task"][0],
        out,
        negative_sample_rate=w,
        calibration_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
    )
    gap = _parity_gap(trained["multi_task"][0], out, rows)
    torch.save(
        {"config": ranker.model_dump(), "state": trained["single_head"][0].state_dict()},
        out / BASELINE_FILE,
    )
    save_utility_weights(default_utility_weights(), out / UTILITY_FILE)
    run = RankingRun(
        run_id=run_id,
        training_set=str(path),
        train_rows=int(rows["labels"].shape[0]),
        negative_sample_rate=w,
        other_engaged_share=dict(
            zip(ENGAGEMENTS, fit_other_engaged_share(rows["labels"], w).tolist(), strict=True)
        ),
        effective_sample_rates=dict(zip(ENGAGEMENTS, rates.tolist(), strict=True)),
        split=split,
        ranker=ranker,
        onnx_parity_gap=gap,
        models={kind: run_info for kind, (_, run_info) in trained.items()},
    )
    (out / RUN_FILE).write_text(run.model_dump_json(indent=2) + "\n")
    return out


def _parity_gap(model: torch.nn.Module, out: Path, rows: dict[str, np.ndarray]) -> float:
    """max |torch - ONNX| on up to 512 training rows; refuse an export that drifts."""
    arrays = RankerArrays(
        *(rows[name][:512] for name in ("dense", "topic", "pin_embedding", "query_embedding"))
    )
    gap = max_parity_gap(model, inference_session(out / MODEL_FILE), arrays)
    if not gap <= MAX_PARITY_GAP:
        raise ConfigError(
            f"{out / MODEL_FILE}: ONNX logits differ from torch by {gap:.2e} "
            f"(> {MAX_PARITY_GAP}); check the opset and torch/onnx versions"
        )
    return gap


def main(argv: Sequence[str] | None = None) -> Path:
    """`python -m training.job ranking --config FILE [--home DIR] [--run-id ID]`; returns the
    run folder (the dispatcher prints it)."""
    from training.job import parse_job_args

    args = parse_job_args(
        "ranking", "Train the multi-task ranker and its baseline on Ray Train; export.", argv
    )
    config = load_job_config(args.config)
    if args.run_id:
        config = config.model_copy(update={"run_id": args.run_id})
    return train_ranking(config, args.home)
