"""The pin corpus: every pin's tower inputs read from the feature tables, and its embeddings.

The index must hold every pin that can be recommended, not only the pins seen as positives, so
the corpus comes from the feature tables (`pin_content` has one row per pin; `pin_features`
one snapshot per pin per day), not from the training set. `as_of` picks, per pin, the latest
daily snapshot stamped at or before that time, as serving would read it from the online store
after a materialisation at `as_of`; pins without a snapshot get NaN dense values (the tower
zeroes them). Evaluation passes the split time so held-out days do not leak into the corpus.

Notation: N pins, D content embedding width, E tower output width.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from torch import nn

from pinfeed.errors import DataNotFoundError, SchemaError
from training.retrieval.features import PIN_DENSE_FEATURES

PIN_CONTENT_FILE = "pin_content.parquet"
PIN_FEATURES_FILE = "pin_features.parquet"


@dataclass(frozen=True)
class PinCorpus:
    """Pin tower inputs of the whole corpus, in `features.PIN_TOWER_INPUTS` order.

    Shapes: `pin_id`, `topic` [N] int64; `pin_dense` [N, 8] float32 (raw, NaN = missing);
    `pin_content` [N, D] float32.
    """

    pin_id: torch.Tensor
    pin_dense: torch.Tensor
    pin_content: torch.Tensor
    topic: torch.Tensor

    def __len__(self) -> int:
        return int(self.pin_id.shape[0])

    def tower_inputs(self, rows: slice = slice(None)) -> tuple[torch.Tensor, ...]:
        """(pin_id, pin_dense, pin_content, topic) of `rows`, ready for `PinTower`."""
        return (self.pin_id[rows], self.pin_dense[rows], self.pin_content[rows], self.topic[rows])


def _read(features_dir: Path, name: str) -> pd.DataFrame:
    path = features_dir / name
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no pin feature table; run `pinfeed features build`")
    return pq.read_table(path).to_pandas()


def _latest_snapshots(snapshots: pd.DataFrame, as_of: datetime | None) -> pd.DataFrame:
    """One row per pin: its latest snapshot stamped at or before `as_of` (None: the latest)."""
    if as_of is not None:
        snapshots = snapshots[snapshots["event_timestamp"] <= pd.Timestamp(as_of)]
    ordered = snapshots.sort_values(["pin_id", "event_timestamp"], kind="stable")
    return ordered.drop_duplicates("pin_id", keep="last").set_index("pin_id")


def read_pin_corpus(features_dir: Path, as_of: datetime | None = None) -> PinCorpus:
    """Every pin of `pin_content.parquet` with its dense features as of `as_of`, by pin id."""
    content = _read(features_dir, PIN_CONTENT_FILE).sort_values("pin_id", kind="stable")
    if content.empty:
        raise DataNotFoundError(f"{features_dir / PIN_CONTENT_FILE}: holds no pins")
    if content["pin_id"].duplicated().any():
        raise SchemaError(f"{features_dir / PIN_CONTENT_FILE}: pin_id must be unique per pin")
    latest = _latest_snapshots(_read(features_dir, PIN_FEATURES_FILE), as_of)
    dense = latest.reindex(content["pin_id"].to_numpy())
    dense["shoppable"] = content["shoppable"].astype("float32").to_numpy()
    embeddings = np.stack(content["content_embedding"].to_numpy()).astype(np.float32)
    # torch.tensor copies the id columns: pandas may hand out read-only arrays, which
    # torch.from_numpy would share (undefined behaviour on any in-place write)
    return PinCorpus(
        pin_id=torch.tensor(content["pin_id"].to_numpy(dtype=np.int64)),
        pin_dense=torch.from_numpy(
            dense[list(PIN_DENSE_FEATURES)].to_numpy(dtype=np.float32, na_value=np.nan)
        ),
        pin_content=torch.from_numpy(embeddings),
        topic=torch.tensor(content["topic"].to_numpy(dtype=np.int64)),
    )


@torch.no_grad()
def embed_pins(pin_tower: nn.Module, corpus: PinCorpus, batch_size: int = 8192) -> np.ndarray:
    """[N, E] float32 embeddings of every pin, in corpus order (tower on CPU, eval mode)."""
    pin_tower.eval()
    parts = [
        pin_tower(*corpus.tower_inputs(slice(start, start + batch_size))).numpy()
        for start in range(0, len(corpus), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32)
