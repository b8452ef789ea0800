"""The retrieval task's parts on hand-made batches, each against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pinfeed.errors import ConfigError, SchemaError
from training.retrieval.config import PositiveWeightConfig, RetrievalConfig, TowerConfig
from training.retrieval.dataset import pin_sampling, weighted_rows
from training.retrieval.features import (
    MISSING_ID,
    PIN_DENSE_FEATURES,
    USER_DENSE_FEATURES,
    RetrievalBatch,
    batch_from_table,
    encode_kinds,
)
from training.retrieval.loss import (
    engagement_aux_loss,
    logq_correction,
    remove_masked,
    retrieval_loss,
    same_user_positive_mask,
    shuffled_negatives,
    weighted_softmax_cross_entropy,
)
from training.retrieval.model import RetrievalModel
from training.retrieval.sampling import PinSampling
from training.retrieval.train_step import EarlyStopping, train_on_parquet, train_step
from training.retrieval.weights import positive_weights

WEIGHTS = PositiveWeightConfig(alpha=0.5, t_max_s=60.0, save_weight=0.3, min_dwell_s=10.0)
CONVERSION, CLICK, SAVE = 0, 1, 2
LOGITS_3X3 = torch.tensor([[2.0, 0.0, 1.0], [1.0, 3.0, 0.0], [0.0, 1.0, 1.0]])


def _weights(variant: str, kinds: list[int], dwell: list[float]) -> list[float]:
    out = positive_weights(torch.tensor(kinds), torch.tensor(dwell), WEIGHTS, variant)
    return out.tolist()


def _ce(row: list[float], target: int) -> float:
    """-log softmax(row)[target], by hand."""
    return -row[target] + math.log(sum(math.exp(v) for v in row))


# Positive weights ---------------------------------------------------------------------------


def test_click_weight_at_zero_tmax_and_ten_tmax() -> None:
    got = _weights("dual_positive", [CLICK] * 5, [0.0, 30.0, 60.0, 600.0, float("nan")])
    # t = t_max gives alpha * log(2) / log(2) = alpha exactly; 10 t_max is capped there.
    expected = [0.0, 0.5 * math.log(1.5) / math.log(2.0), 0.5, 0.5, 0.0]
    assert got == pytest.approx(expected, abs=1e-7)


def test_conversion_and_save_weights_ignore_dwell() -> None:
    got = _weights("dual_positive", [CONVERSION, CONVERSION, SAVE], [float("nan"), 500.0, 3.0])
    assert got == pytest.approx([1.0, 1.0, 0.3])


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # kinds: conversion, click t=0, click t=5, click t=10, click t=600, save
        ("conversions_only", [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        ("clicks_unweighted", [1.0, 0.5, 0.5, 0.5, 0.5, 0.3]),
        ("min_dwell", [1.0, 0.0, 0.0, 0.5, 0.5, 0.3]),
        ("conversions_aux", [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]),  # its softmax: conversions_only
        (
            "dual_positive_aux",
            [
                1.0,
                0.0,
                0.5 * math.log(1 + 5 / 60) / math.log(2),
                0.5 * math.log(1 + 10 / 60) / math.log(2),
                0.5,
                0.3,
            ],
        ),
    ],
)
def test_variant_weights(variant: str, expected: list[float]) -> None:
    kinds = [CONVERSION, CLICK, CLICK, CLICK, CLICK, SAVE]
    dwell = [float("nan"), 0.0, 5.0, 10.0, 600.0, float("nan")]
    assert _weights(variant, kinds, dwell) == pytest.approx(expected, abs=1e-7)


def test_unknown_kind_is_an_error() -> None:
    assert encode_kinds(["conversion", "click", "save"]).tolist() == [0, 1, 2]
    with pytest.raises(SchemaError, match="repin"):
        encode_kinds(["click", "repin"])


# Mask ---------------------------------------------------------------------------------------


def test_mask_removes_same_user_positives_and_duplicates_never_diagonal() -> None:
    users = torch.tensor([1, 1, 2, 3, 2, 4, 4])
    pins = torch.tensor([10, 11, 10, 12, 13, 14, 14])
    expected = torch.tensor(
        [
            [0, 1, 1, 0, 0, 0, 0],  # user 1 engaged 10 and 11; col 2 is pin 10 again
            [1, 0, 1, 0, 0, 0, 0],
            [1, 0, 0, 0, 1, 0, 0],  # user 2 engaged 10 and 13; col 0 is a duplicate of its pin
            [0, 0, 0, 0, 0, 0, 0],  # user 3 only has its own row
            [1, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 1],  # the same (user, pin) twice
            [0, 0, 0, 0, 0, 1, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(same_user_positive_mask(users, pins), expected)


# logQ ---------------------------------------------------------------------------------------


def test_logq_shifts_each_column_by_minus_log_q_exactly() -> None:
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.25]))
    shifted = logq_correction(LOGITS_3X3, log_q)
    for j in range(3):
        assert torch.equal(shifted[:, j], LOGITS_3X3[:, j] - log_q[j])
    with pytest.raises(ConfigError, match="log_q"):
        logq_correction(LOGITS_3X3, log_q[:2])


def test_uniform_q_leaves_the_loss_unchanged() -> None:
    ids = torch.tensor([1, 2, 3])
    weights = torch.ones(3)
    plain = retrieval_loss(LOGITS_3X3, ids, ids * 10, weights)
    uniform = retrieval_loss(LOGITS_3X3, ids, ids * 10, weights, torch.full((3,), math.log(1 / 3)))
    assert float(uniform) == pytest.approx(float(plain), abs=1e-6)


def test_pin_sampling_frequency() -> None:
    sampling = PinSampling.from_pin_ids(np.array([0, 0, 0, 2]), n_pin_buckets=4)
    got = sampling.log_q(torch.tensor([0, 1, 2, 4])).tolist()
    # pin 1 unseen counts once; pin 4 hashes onto pin 0's row.
    assert got == pytest.approx([math.log(0.75), math.log(0.25), math.log(0.25), math.log(0.75)])


# Loss ---------------------------------------------------------------------------------------


def test_weighted_loss_on_3x3_by_hand() -> None:
    weights = torch.tensor([1.0, 0.5, 0.25])
    rows = LOGITS_3X3.tolist()
    by_hand = (_ce(rows[0], 0) + 0.5 * _ce(rows[1], 1) + 0.25 * _ce(rows[2], 2)) / 1.75
    assert by_hand == pytest.approx(0.404587243, abs=1e-9)
    got = weighted_softmax_cross_entropy(LOGITS_3X3, weights)
    assert float(got) == pytest.approx(by_hand, abs=1e-6)


def test_full_task_on_3x3_with_logq_and_mask_by_hand() -> None:
    # Rows 0 and 1 belong to the same user: each is removed from the other's negatives.
    users, pins = torch.tensor([7, 7, 8]), torch.tensor([10, 20, 30])
    weights = torch.tensor([1.0, 0.5, 0.25])
    log_q = [math.log(0.5), math.log(0.25), math.log(0.25)]
    z = [[v - log_q[j] for j, v in enumerate(row)] for row in LOGITS_3X3.tolist()]
    row0 = _ce([z[0][0], z[0][2]], 0)
    row1 = _ce([z[1][1], z[1][2]], 0)
    row2 = _ce(z[2], 2)
    by_hand = (row0 + 0.5 * row1 + 0.25 * row2) / 1.75
    got = retrieval_loss(LOGITS_3X3, users, pins, weights, torch.tensor(log_q))
    assert float(got) == pytest.approx(by_hand, abs=1e-6)


def test_masked_negatives_get_zero_gradient() -> None:
    logits = LOGITS_3X3.clone().requires_grad_(True)
    users, pins = torch.tensor([7, 7, 8]), torch.tensor([10, 20, 30])
    retrieval_loss(logits, users, pins, torch.ones(3)).backward()
    mask = same_user_positive_mask(users, pins)
    assert torch.equal(logits.grad[mask], torch.zeros(2))
    assert (logits.grad[~mask] != 0).all()


def test_zero_weight_rows_contribute_nothing() -> None:
    masked = remove_masked(LOGITS_3X3, torch.zeros(3, 3, dtype=torch.bool))
    only_first = weighted_softmax_cross_entropy(masked, torch.tensor([2.0, 0.0, 0.0]))
    assert float(only_first) == pytest.approx(_ce(LOGITS_3X3[0].tolist(), 0), abs=1e-6)
    assert float(weighted_softmax_cross_entropy(masked, torch.zeros(3))) == 0.0


# Auxiliary engagement head ------------------------------------------------------------------


def test_shuffled_negatives_are_a_derangement() -> None:
    assert shuffled_negatives(4, 1).tolist() == [3, 0, 1, 2]
    with pytest.raises(ConfigError, match="shift"):
        shuffled_negatives(4, 4)


def test_engagement_aux_loss_by_hand() -> None:
    positive = torch.tensor([0.0, 2.0, 5.0])
    negative = torch.tensor([-1.0, 0.0, 9.0])
    engaged = torch.tensor([True, True, False])
    valid = torch.tensor([True, False, True])
    # positives 0.0, 2.0 (label 1); negatives -1.0, 9.0 (label 0)
    by_hand = (
        math.log(1 + math.exp(-0.0))
        + math.log(1 + math.exp(-2.0))
        + math.log(1 + math.exp(-1.0))
        + math.log(1 + math.exp(9.0))
    ) / 4
    got = engagement_aux_loss(positive, negative, engaged, valid)
    assert float(got) == pytest.approx(by_hand, abs=1e-6)


# Model and step -----------------------------------------------------------------------------

CONTENT_DIM = 8


def _config(variant: str = "dual_positive", aux_weight: float = 0.1) -> RetrievalConfig:
    towers = TowerConfig(
        n_user_buckets=20,
        n_pin_buckets=50,
        n_topics=5,
        content_dim=CONTENT_DIM,
        hidden_dims=(16,),
        output_dim=8,
    )
    return RetrievalConfig(
        towers=towers,
        variant=variant,
        batch_size=16,
        learning_rate=0.01,
        epochs=3,
        aux_weight=aux_weight,
    )


def _random_batch(rows: int, seed: int = 0) -> RetrievalBatch:
    g = torch.Generator().manual_seed(seed)
    return RetrievalBatch(
        user_id=torch.randint(0, 20, (rows,), generator=g),
        query_pin_id=torch.randint(0, 50, (rows,), generator=g),
        pin_id=torch.randint(0, 50, (rows,), generator=g),
        user_dense=torch.rand(rows, len(USER_DENSE_FEATURES), generator=g) * 100,
        query_content=torch.randn(rows, CONTENT_DIM, generator=g),
        pin_dense=torch.rand(rows, len(PIN_DENSE_FEATURES), generator=g) * 100,
        pin_content=torch.randn(rows, CONTENT_DIM, generator=g),
        topic=torch.randint(0, 5, (rows,), generator=g),
        kind=torch.randint(0, 3, (rows,), generator=g),
        dwell_s=torch.rand(rows, generator=g) * 120,
    )


def test_towers_return_unit_vectors_and_tolerate_missing_features() -> None:
    model = RetrievalModel(_config())
    batch = _random_batch(6)
    batch.user_dense[0, 0] = float("nan")
    query, pin = model(batch)
    assert query.shape == pin.shape == (6, 8)
    assert torch.allclose(query.norm(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(pin.norm(dim=1), torch.ones(6), atol=1e-6)
    assert model.logits(query, pin).shape == (6, 6)


@pytest.mark.parametrize(
    "variant", ["conversions_only", "dual_positive", "dual_positive_aux", "conversions_aux"]
)
def test_train_step_backpropagates_into_both_towers(variant: str) -> None:
    config = _config(variant)
    model = RetrievalModel(config)
    batch = _random_batch(12)
    sampling = PinSampling.from_pin_ids(batch.pin_id.numpy(), 50)
    loss = train_step(model, batch, config, sampling, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.query_tower.mlp[0].weight.grad.abs().sum() > 0
    assert model.pin_tower.mlp[0].weight.grad.abs().sum() > 0
    if variant.endswith("_aux"):
        assert model.engagement_head.mlp[0].weight.grad.abs().sum() > 0
    else:
        assert model.engagement_head is None


def _step_loss(variant: str, batch: RetrievalBatch, aux_weight: float = 0.1) -> float:
    """train_step's loss from the same initial towers (seed 0) and the same aux shuffle."""
    torch.manual_seed(0)
    model = RetrievalModel(_config(variant, aux_weight))
    sampling = PinSampling.from_pin_ids(batch.pin_id.numpy(), 50)
    return float(train_step(model, batch, _config(variant, aux_weight), sampling))


def test_conversions_aux_softmax_is_conversions_only_and_its_head_learns_from_clicks() -> None:
    """Loss = softmax(conversions) + aux_weight * engagement loss, linear in aux_weight: two
    weights give the softmax part, which must equal conversions_only's on the same towers."""
    batch = _random_batch(16, seed=4)
    batch.kind[:4] = CONVERSION
    batch.kind[4:] = CLICK  # 12 clicks the softmax gives no weight
    low, high = _step_loss("conversions_aux", batch, 0.1), _step_loss("conversions_aux", batch, 1.0)
    softmax = (1.0 * low - 0.1 * high) / (1.0 - 0.1)
    assert softmax == pytest.approx(_step_loss("conversions_only", batch), abs=1e-5)
    assert high - low > 0.01  # the engagement term is there, and positive
    only_clicks = batch.select(torch.arange(4, 16))
    assert _step_loss("conversions_only", only_clicks) == 0.0
    assert _step_loss("conversions_aux", only_clicks) > 0.0


def test_engagement_head_has_its_own_layers() -> None:
    model = RetrievalModel(_config("dual_positive_aux"))
    head = sum(p.numel() for p in model.engagement_head.parameters())
    assert head == (3 * 8) * 64 + 64 + 64 + 1  # [q | p | q*p] -> 64 -> 1


def test_train_step_needs_sampling_when_logq_is_on() -> None:
    with pytest.raises(ConfigError, match="sampling"):
        train_step(RetrievalModel(_config()), _random_batch(4), _config(), None)


def _write_training_set(path: Path, rows: int) -> None:
    """A retrieval training set as `build_retrieval_set` writes it: Feast full names, nullable
    query pins and features."""
    batch = _random_batch(rows, seed=1)
    kinds = np.array(["conversion", "click", "save"])[batch.kind.numpy()]
    no_query = np.arange(rows) % 10 == 0
    query_content = [
        None if gone else list(v)
        for gone, v in zip(no_query, batch.query_content.numpy(), strict=True)
    ]
    columns = {
        "user_id": batch.user_id.numpy(),
        "query_pin_id": pa.array(batch.query_pin_id.numpy(), mask=no_query),
        "pin_id": batch.pin_id.numpy(),
        "positive_kind": kinds,
        "click_dwell_s": np.where(kinds == "click", batch.dwell_s.numpy(), np.nan),
        "pin_content__topic": batch.topic.numpy().astype(np.int32),
        "query_pin_content__topic": batch.topic.numpy().astype(np.int32),
        "pin_content__content_embedding": list(batch.pin_content.numpy()),
        "query_pin_content__content_embedding": pa.array(query_content, pa.list_(pa.float32())),
        "pin_content__shoppable": batch.pin_dense[:, -1].numpy() > 50,
        "query_pin_content__shoppable": np.zeros(rows, dtype=bool),
    }
    for k, name in enumerate(USER_DENSE_FEATURES):
        view = (
            "user_dwell"
            if "dwell" in name or "click_share" in name or name == "user_clicks_30d"
            else "user_features"
        )
        columns[f"{view}__{name}"] = batch.user_dense[:, k].numpy()
    for k, name in enumerate(PIN_DENSE_FEATURES[:-1]):
        values = batch.pin_dense[:, k].numpy()
        columns[f"pin_features__{name}"] = (
            pa.array(values, mask=no_query) if name == "pin_age_days" else values
        )
    pq.write_table(pa.table(columns), path)


def test_batch_from_a_training_set_with_nulls(tmp_path: Path) -> None:
    path = tmp_path / "retrieval.parquet"
    _write_training_set(path, 20)
    batch = batch_from_table(pq.read_table(path))
    expected = _random_batch(20, seed=1)
    assert batch.query_pin_id[0] == MISSING_ID and batch.query_pin_id[1] == expected.query_pin_id[1]
    assert torch.equal(batch.query_content[0], torch.zeros(CONTENT_DIM))
    assert torch.equal(batch.query_content[1:10], expected.query_content[1:10])
    assert torch.isnan(batch.pin_dense[0, PIN_DENSE_FEATURES.index("pin_age_days")])
    assert torch.equal(batch.user_dense, expected.user_dense)
    assert batch.pin_dense[:, -1].tolist() == (expected.pin_dense[:, -1] > 50).float().tolist()
    assert torch.equal(batch.topic, expected.topic)
    clicks = batch.kind == CLICK
    assert (
        torch.isnan(batch.dwell_s[~clicks]).all() and not torch.isnan(batch.dwell_s[clicks]).any()
    )
    with pytest.raises(SchemaError, match="topic"):
        batch_from_table(pq.read_table(path).drop_columns(["pin_content__topic"]))


def test_plain_loop_over_parquet_lowers_the_loss(tmp_path: Path) -> None:
    path = tmp_path / "retrieval.parquet"
    _write_training_set(path, 96)
    result = train_on_parquet(path, _config().model_copy(update={"epochs": 8}))
    assert len(result.epoch_losses) == 8
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_early_stopping_keeps_the_best_checked_model_and_stops_after_patience(
    tmp_path: Path,
) -> None:
    """A scripted validation score peaks at the 3rd check (step 6): training stops after two
    more checks without improvement (step 10), and the model returned is the one scored at
    step 6, parameter for parameter, not the last one."""
    path = tmp_path / "retrieval.parquet"
    _write_training_set(path, 96)  # batch 32: 3 steps per epoch
    scores = iter([0.1, 0.2, 0.9, 0.5, 0.4, 0.3, 0.2])
    seen: list[dict[str, torch.Tensor]] = []

    def score(model: RetrievalModel, step: int) -> float:
        assert not model.training and step % 2 == 0  # scored in eval mode, every 2 steps
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    config = _config().model_copy(update={"epochs": 50, "batch_size": 32})
    result = train_on_parquet(path, config, 1000, EarlyStopping(score, every=2, patience=2))
    assert [step for step, _ in result.checks] == [2, 4, 6, 8, 10]
    assert result.best_step == 6 and result.steps == 10
    best = seen[2]
    assert all(torch.equal(best[k], v) for k, v in result.model.state_dict().items())
    assert not all(torch.equal(seen[-1][k], v) for k, v in result.model.state_dict().items())


def test_aux_variants_train_on_engagement_rows_but_draw_negatives_from_softmax_positives() -> None:
    table = pa.table(
        {
            "user_id": [1, 2, 3, 4],
            "pin_id": [10, 11, 12, 13],
            "positive_kind": ["conversion", "click", "save", "click"],
            "click_dwell_s": [None, 0.0, None, 30.0],
        }
    )

    def pins(variant: str) -> list[int]:
        return weighted_rows(table, _config(variant)).column("pin_id").to_pylist()

    assert pins("conversions_only") == [10]
    assert pins("dual_positive") == [10, 12, 13]  # a 0 s click weighs 0
    assert pins("conversions_aux") == pins("dual_positive_aux") == [10, 11, 12, 13]
    for variant, q in [("conversions_aux", 1.0), ("dual_positive_aux", 1 / 3)]:
        config = _config(variant)
        sampling = pin_sampling(weighted_rows(table, config), config)
        # q(pin 10) over the softmax positives only: {10} and {10, 12, 13}
        assert float(sampling.log_q(torch.tensor([10]))) == pytest.approx(math.log(q))
