"""q(pin): how often a pin turns up as an in-batch candidate, for the logQ correction.

In-batch negatives are the other rows' positive pins, so a pin's chance of being a candidate
in a batch is its share of the training rows: q(pin) = count(pin) / rows. Build it from the rows
the variant actually trains on (weight > 0), since rows with weight 0 are dropped from batches.
Pins never seen in training get a count of 1 (they can only show up through hashing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pinfeed.errors import ConfigError


@dataclass(frozen=True)
class PinSampling:
    """log q per pin bucket: `log_q_table` [n_pin_buckets] float32."""

    log_q_table: torch.Tensor

    @classmethod
    def from_pin_ids(cls, pin_ids: np.ndarray, n_pin_buckets: int) -> PinSampling:
        """Count the training rows' positive pins (ids taken mod `n_pin_buckets`, as the towers do)."""
        if len(pin_ids) == 0:
            raise ConfigError("pin_ids: no training rows to estimate pin sampling frequency from")
        counts = np.bincount(
            np.mod(np.asarray(pin_ids, dtype=np.int64), n_pin_buckets), minlength=n_pin_buckets
        )
        counts = np.maximum(counts, 1).astype(np.float64)
        return cls(torch.from_numpy(np.log(counts / len(pin_ids)).astype(np.float32)))

    def log_q(self, pin_id: torch.Tensor) -> torch.Tensor:
        """[B] pin ids -> [B] log q(pin)."""
        table = self.log_q_table.to(pin_id.device)
        return table[torch.remainder(pin_id, table.shape[0])]
