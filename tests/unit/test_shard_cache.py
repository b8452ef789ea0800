"""The in-memory shard path: every row once per epoch, a new seeded order each epoch."""

from __future__ import annotations

import torch

from training.shard_cache import shard_in_memory, shard_tensors, shuffled_batches


def _columns(rows: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(rows)
    return {"pin_id": ids, "dense": torch.stack([ids.float(), -ids.float()], dim=1)}


def test_shard_tensors_concatenates_batches_column_by_column() -> None:
    whole = _columns(10)
    parts = [{name: tensor[i : i + 4] for name, tensor in whole.items()} for i in (0, 4, 8)]
    joined = shard_tensors(parts, torch.device("cpu"))
    assert joined.keys() == whole.keys()
    assert all(torch.equal(joined[name], whole[name]) for name in whole)
    assert shard_tensors([], torch.device("cpu")) == {}


def test_each_epoch_sees_every_row_once_in_a_seeded_order() -> None:
    columns = _columns(1000)
    epochs = {seed: list(shuffled_batches(columns, 128, seed)) for seed in (1, 2)}
    for batches in epochs.values():
        assert [len(b["pin_id"]) for b in batches] == [128] * 7 + [104]
        seen = torch.cat([b["pin_id"] for b in batches])
        assert torch.equal(seen.sort().values, columns["pin_id"])
        for batch in batches:  # rows stay whole: every column is permuted alike
            assert torch.equal(batch["dense"][:, 0].long(), batch["pin_id"])
    order = {seed: torch.cat([b["pin_id"] for b in batches]) for seed, batches in epochs.items()}
    assert not torch.equal(order[1], order[2])
    again = torch.cat([b["pin_id"] for b in shuffled_batches(columns, 128, 1)])
    assert torch.equal(again, order[1])
    assert list(shuffled_batches({}, 128, 1)) == []


def test_a_shard_is_held_in_memory_only_when_each_worker_s_part_fits() -> None:
    assert shard_in_memory(2_000, workers=2, max_rows=1_000)
    assert not shard_in_memory(2_001, workers=2, max_rows=1_000)
    assert not shard_in_memory(1_001, workers=1, max_rows=1_000)
