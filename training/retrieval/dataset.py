"""What one retrieval run trains on: the variant's positive rows, q(pin), and the table sizes.

Rows whose positive weight is 0 under the variant (every click and save for
`conversions_only`, short clicks for `min_dwell`) are removed before batching, so a batch of
B rows holds B real positives and B - 1 real negatives for each of them (the `_aux` variants
excepted, below), and the number of optimizer steps follows the variant's own data.
`train_step` keeps zero-weight rows out of the softmax too; doing it here keeps batches full.
The same filter feeds the plain loop and the Ray Data path.
The `_aux` variants keep every engagement row as well: their auxiliary task learns from the
clicks and saves the softmax gives no weight (`conversions_aux`: all of them).

Embedding tables are sized from the pin corpus and every user the data knows (users table
and training set), so every pin in the index and every user at serving time has its own row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pinfeed.errors import DataNotFoundError
from training.retrieval.config import RetrievalConfig, TowerConfig
from training.retrieval.corpus import PinCorpus
from training.retrieval.features import encode_kinds, resolve_column
from training.retrieval.sampling import PinSampling
from training.retrieval.weights import engagement_rows, positive_weights

WEIGHT_COLUMNS = ("user_id", "pin_id", "positive_kind", "click_dwell_s")
"""The columns `weighted_rows` and `pin_sampling` read (the driver reads only these)."""


def _kinds_and_dwell(table: pa.Table) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] kind codes and click dwell seconds of a training set's rows."""
    kind = torch.from_numpy(
        encode_kinds(table.column("positive_kind").to_numpy(zero_copy_only=False))
    )
    dwell = table.column("click_dwell_s").cast(pa.float32()).to_numpy(zero_copy_only=False)
    return kind, torch.from_numpy(np.asarray(dwell, dtype=np.float32))


def weighted_rows(table: pa.Table, config: RetrievalConfig) -> pa.Table:
    """The rows of a retrieval training set a run under `config.variant` trains on: its
    positives, plus every engagement row for the `_aux` variants."""
    kind, dwell_s = _kinds_and_dwell(table)
    keep = positive_weights(kind, dwell_s, config.weights, config.variant) > 0
    if config.uses_aux_head:
        keep |= engagement_rows(kind)
    return table.filter(pa.array(keep.numpy()))


class VariantRows:
    """`weighted_rows` as a Ray Data `map_batches` function (Arrow batches in and out)."""

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return weighted_rows(batch, self.config)


def pin_sampling(rows: pa.Table, config: RetrievalConfig) -> PinSampling:
    """q(pin) over the softmax positives among `rows` (the output of `weighted_rows`): the
    pins the in-batch negatives are drawn from."""
    kind, dwell_s = _kinds_and_dwell(rows)
    positive = (positive_weights(kind, dwell_s, config.weights, config.variant) > 0).numpy()
    pin_ids = rows.column(resolve_column(rows.column_names, "pin_id")).to_numpy()
    pin_ids = np.asarray(pin_ids, dtype=np.int64)[positive]
    return PinSampling.from_pin_ids(pin_ids, config.towers.n_pin_buckets)


def sized_towers(corpus: PinCorpus, user_ids: np.ndarray, **widths: object) -> TowerConfig:
    """`TowerConfig` with tables sized from the corpus (pins, topics, D) and `user_ids`."""
    return TowerConfig.from_data(
        user_ids=user_ids,
        pin_ids=corpus.pin_id.numpy(),
        topics=corpus.topic.numpy(),
        content_dim=int(corpus.pin_content.shape[1]),
        **widths,
    )


def read_training_set(path: Path, columns: tuple[str, ...] | None = None) -> pa.Table:
    """The retrieval training set parquet (optionally only `columns`), or DataNotFoundError."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no retrieval training set; build it with `pinfeed features training-sets`"
        )
    return pq.read_table(path, columns=list(columns) if columns else None)


def known_user_ids(users_path: Path, training_set: pa.Table) -> np.ndarray:
    """User ids of the users table (when present) and of the training set."""
    ids = [np.asarray(training_set.column("user_id").to_numpy(), dtype=np.int64)]
    if users_path.is_file():
        ids.append(np.asarray(pq.read_table(users_path, columns=["user_id"])["user_id"]))
    return np.concatenate(ids)
