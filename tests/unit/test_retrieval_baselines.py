"""The retrieval baselines on hand-made positives: recent popularity orders by the window then
all time, item-kNN's cosine and votes are the hand-computed ones, a query is the user's
history plus its query pin (unseen users: the query pin alone), and implicit's ALS, folded in
per query, finds the pins that go with a query pin even for a user it never saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from evaluation.retrieval_baselines import (
    BaselineSettings,
    fit_baseline,
    interactions,
    item_similarity,
)
from pinfeed.errors import ConfigError

CUTOFF = datetime(2026, 10, 11, tzinfo=UTC)
PINS = np.array([10, 11, 12, 13, 14, 15])


def positives(rows: list[tuple[int, int, float]]) -> pa.Table:
    """Train positives from (user, pin, days before the cutoff)."""
    return pa.table(
        {
            "user_id": pa.array([u for u, _, _ in rows], pa.int64()),
            "pin_id": pa.array([p for _, p, _ in rows], pa.int64()),
            "positive_ts": pa.array(
                [CUTOFF - timedelta(days=d) for _, _, d in rows], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def queries(rows: list[tuple[int, int | None]]) -> pa.Table:
    """Held-out queries from (user, query pin or None)."""
    return pa.table(
        {
            "user_id": pa.array([u for u, _ in rows], pa.int64()),
            "query_pin_id": pa.array([q for _, q in rows], pa.int64()),
        }
    )


def test_popularity_orders_by_the_recent_window_then_all_time() -> None:
    # pin 10: 3 old positives; 11: 2 recent; 12: 1 recent + 2 old; 13: 1 recent
    train = positives([(1, 10, 30), (2, 10, 30), (3, 10, 30), (1, 11, 1), (2, 11, 2),
                       (1, 12, 3), (2, 12, 20), (3, 12, 20), (3, 13, 1)])  # fmt: skip
    data = interactions(train, PINS, CUTOFF, recent_days=7)
    retrieve = fit_baseline("popularity", data, BaselineSettings(), seed=0)
    top = retrieve(queries([(1, 15), (99, 14)]), 4)
    assert top.tolist() == [[11, 12, 13, 10]] * 2  # same list for every query
    assert fit_baseline("popularity", interactions(train, PINS, CUTOFF, 60), BaselineSettings(), 0)(
        queries([(1, 15)]), 2
    ).tolist() == [[10, 12]]  # 3 each over 60 days: 10 and 12 tie on the window and all time


def test_an_unknown_baseline_is_refused_by_name() -> None:
    data = interactions(positives([(1, 10, 1)]), PINS, CUTOFF, recent_days=7)
    with pytest.raises(ConfigError, match="unknown baseline 'bpr'"):
        fit_baseline("bpr", data, BaselineSettings(), seed=0)  # type: ignore[arg-type]


def test_a_query_is_the_users_history_plus_its_query_pin() -> None:
    train = positives([(1, 10, 1), (1, 10, 2), (1, 12, 1), (2, 13, 1)])
    data = interactions(train, PINS, CUTOFF, recent_days=7)
    matrix = data.queries(queries([(1, 15), (2, 13), (99, 14), (2, None), (1, 99)])).toarray()
    expected = np.zeros((5, len(PINS)), np.float32)
    expected[0, [0, 2, 5]] = [2, 1, 1]  # two positives on pin 10, one on 12, query pin 15
    expected[1, 3] = 2  # user 2's pin 13 is also the query pin
    expected[2, 4] = 1  # an unseen user: the query pin alone
    expected[3, 3] = 1  # no query pin (null): the history alone, no vote for the first pin
    expected[4, [0, 2]] = [2, 1]  # a query pin outside the corpus: the history alone
    assert matrix.tolist() == expected.tolist()


def test_item_knn_sums_the_cosine_of_the_users_pins_and_the_query_pin() -> None:
    # users 1-3 engage with 10 and 11; user 3 also 12; user 4 only 13
    train = positives([(1, 10, 1), (1, 11, 1), (2, 10, 1), (2, 11, 1), (3, 10, 1),
                       (3, 12, 1), (4, 13, 1)])  # fmt: skip
    data = interactions(train, PINS, CUTOFF, recent_days=7)
    similarity = item_similarity(data.counts).toarray()
    assert similarity[0, 1] == pytest.approx(2 / np.sqrt(3 * 2))  # 10 ~ 11: 2 common users
    assert similarity[0, 2] == pytest.approx(1 / np.sqrt(3 * 1))
    assert similarity[1, 2] == 0.0 and similarity[3].sum() == 0.0
    assert np.diag(similarity).tolist() == [0.0] * len(PINS)
    retrieve = fit_baseline("item_knn", data, BaselineSettings(), seed=0)
    top = retrieve(queries([(99, 10), (4, 12)]), 3)
    # unseen user, query pin 10: 11 (0.816) > 12 (0.577) > the most popular pin left (10 itself)
    assert top[0].tolist() == [11, 12, 10]
    # user 4 (pin 13, no neighbours) with query pin 12: 10, then by popularity 11 and 12 (12
    # and 13 tie on counts, the lower column first; nothing is excluded, as for the towers)
    assert top[1].tolist() == [10, 11, 12]


def test_als_folded_in_finds_the_pins_that_go_with_the_query_pin() -> None:
    """Two communities of 20 users: pins 10-12 and 13-15. A user never seen in training asks
    with query pin 10 (or 14): ALS, folded in on that one pin, ranks its community first."""
    rows = [(u, p, 1.0) for u in range(20) for p in (10, 11, 12)]
    rows += [(u, p, 1.0) for u in range(20, 40) for p in (13, 14, 15)]
    data = interactions(positives(rows), PINS, CUTOFF, recent_days=7)
    settings = BaselineSettings(als_factors=4, als_iterations=10)
    top = fit_baseline("als", data, settings, seed=0)(queries([(99, 10), (98, 14)]), 3)
    assert set(top[0].tolist()) == {10, 11, 12}
    assert set(top[1].tolist()) == {13, 14, 15}
