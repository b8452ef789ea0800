"""The gradient-boosted trees baseline of the ranking evaluation: LightGBM, one model per head.

The standard strong baseline for tabular engagement prediction, given what the ranker gets:
the same training rows (the run's training set before `train_end`, negatives downsampled at
the same rate), the same labels, and the same inputs as plain columns: the dense features
(NaN stays missing, which trees handle), the candidate's topic as a categorical (unknown: NaN),
both content embeddings and their cosine (the ranker's cross feature). Each head's trees stop
growing when their PR-AUC on the run's validation days (never downsampled) stops improving,
the validation the ranker's own split sets aside. Its logits are calibrated with the run's
per-head effective rates, as the ranker's are (the rates describe the downsampled data, not
the model), so PR-AUC, Brier and ECE compare like for like.

Notation: N rows, F dense features, D embedding length, H heads.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import Field

from pinfeed.artifacts.ranker import RankerInputs
from pinfeed.config import FrozenModel
from pinfeed.schema import ENGAGEMENTS
from training.ranking.features import label_array, ranker_arrays

if TYPE_CHECKING:
    from lightgbm import LGBMClassifier


class GbdtConfig(FrozenModel):
    """LightGBM's settings, the same for every head."""

    n_estimators: int = Field(1000, gt=0, description="The cap; early stopping ends sooner.")
    early_stopping_rounds: int = Field(50, gt=0, description="Rounds without a better PR-AUC.")
    learning_rate: float = Field(0.05, gt=0)
    num_leaves: int = Field(31, gt=1)
    min_child_samples: int = Field(50, gt=0)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    seed: int = 0
    n_jobs: int = Field(2, gt=0, description="LightGBM threads.")


def gbdt_matrix(inputs: RankerInputs) -> NDArray[np.float32]:
    """[N, F + 1 + 2D + 1]: dense, topic, pin and query embeddings, and their cosine."""
    pin, query = inputs.pin_embedding, inputs.query_embedding
    norms = np.linalg.norm(pin, axis=1) * np.linalg.norm(query, axis=1)
    cosine = np.divide((pin * query).sum(axis=1), norms, out=np.zeros(len(pin)), where=norms > 0)
    topic = np.where(inputs.topic >= 0, inputs.topic, np.nan).astype(np.float32)
    return np.column_stack([inputs.dense, topic, pin, query, cosine]).astype(np.float32)


def topic_column(inputs: RankerInputs) -> int:
    """Index of the topic column in `gbdt_matrix` (declared categorical to LightGBM)."""
    return int(inputs.dense.shape[1])


def training_rows(path: Path, train_end: datetime) -> pd.DataFrame:
    """The run's training rows: its training set stamped before `train_end`."""
    frame = pd.read_parquet(path)
    return frame.loc[(frame["event_timestamp"] < train_end).to_numpy()]


def fit_gbdt(
    frame: pd.DataFrame,
    validation: pd.DataFrame,
    embedding_dim: int,
    config: GbdtConfig,
) -> list[LGBMClassifier]:
    """One LGBMClassifier per head (ENGAGEMENTS order) on the training rows, each stopped
    early on its PR-AUC over the validation rows."""
    import lightgbm

    inputs = ranker_arrays(frame, embedding_dim)
    features, labels = gbdt_matrix(inputs), label_array(frame)
    held = gbdt_matrix(ranker_arrays(validation, embedding_dim))
    held_labels = label_array(validation)
    models = []
    for t in range(len(ENGAGEMENTS)):
        model = lightgbm.LGBMClassifier(
            n_estimators=config.n_estimators,
            learning_rate=config.learning_rate,
            num_leaves=config.num_leaves,
            min_child_samples=config.min_child_samples,
            subsample=config.subsample,
            subsample_freq=1,
            colsample_bytree=config.colsample_bytree,
            random_state=config.seed,
            n_jobs=config.n_jobs,
            verbose=-1,
        )
        model.fit(
            features,
            np.ascontiguousarray(labels[:, t]),
            categorical_feature=[topic_column(inputs)],
            eval_X=(held,),
            eval_y=(np.ascontiguousarray(held_labels[:, t]),),
            eval_metric="average_precision",
            callbacks=[
                lightgbm.early_stopping(
                    config.early_stopping_rounds, first_metric_only=True, verbose=False
                )
            ],
        )
        models.append(model)
    return models


def gbdt_logits(models: list[LGBMClassifier], inputs: RankerInputs) -> NDArray[np.float32]:
    """[N, H] raw logits (the sampled-distribution score, before calibration)."""
    features = gbdt_matrix(inputs)
    return np.column_stack([m.predict(features, raw_score=True) for m in models]).astype(np.float32)
