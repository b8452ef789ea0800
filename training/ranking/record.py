"""`ranking/training_run.json`: what a ranking job records about its run for evaluation and the
utility search (the time split, the sample rates, the ranker's shape, the last epoch of each
model). Torch-free.

Time split (days counted back from the end of the event period): training rows are stamped
before the validation days; the validation days tune the utility weights and the test days
(the last ones) hold the report's un-downsampled impressions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from pinfeed.artifacts.layout import RANKING_RECORD
from pinfeed.config import FrozenModel
from pinfeed.errors import DataNotFoundError
from training.ranking.config import RankerConfig, SplitConfig


class RankingSplit(FrozenModel):
    """[train_end, validation_end) validation, [validation_end, test_end) test."""

    train_end: datetime
    validation_end: datetime
    test_end: datetime


class ModelRun(FrozenModel):
    epochs: int
    loss: float
    examples_per_s: float
    checkpoint: str


class RankingRun(FrozenModel):
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


def time_split(period_end: datetime, split: SplitConfig) -> RankingSplit:
    test_end = period_end
    validation_end = test_end - timedelta(days=split.test_days)
    return RankingSplit(
        train_end=validation_end - timedelta(days=split.validation_days),
        validation_end=validation_end,
        test_end=test_end,
    )


def read_ranking_run(ranking_dir: Path) -> RankingRun:
    """The record of the run whose `ranking/` folder is `ranking_dir`."""
    path = ranking_dir / RANKING_RECORD
    if not path.is_file():
        raise DataNotFoundError(f"{path}: missing; train with `pinfeed train ranking`")
    return RankingRun.model_validate_json(path.read_text())


def write_ranking_run(run: RankingRun, ranking_dir: Path) -> Path:
    path = ranking_dir / RANKING_RECORD
    path.write_text(run.model_dump_json(indent=2) + "\n")
    return path
