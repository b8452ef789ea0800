"""pinfeed.attribution: per-cluster increments from served items + feedback, hand-counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from pinfeed.attribution import Credited, reward_increments
from pinfeed.errors import SchemaError

T = datetime(2030, 1, 1, tzinfo=UTC)
WINDOW = timedelta(hours=1)


def served() -> pd.DataFrame:
    """Request 1 of user 5: pins 7, 8 from cluster 50 (query 70), pin 9 from cluster 51."""
    return pd.DataFrame({"request_id": [1, 1, 1], "pin_id": [7, 8, 9], "user_id": [5, 5, 5],
                         "cluster_id": [50, 50, 51], "query_pin_id": [70, 70, 71],
                         "served_ts": [T] * 3})  # fmt: skip


def events(*rows: tuple[int, str, timedelta]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"request_id": 1, "pin_id": pin, "kind": kind, "event_ts": T + after}
            for pin, kind, after in rows
        ]
    )


def counts(result) -> dict[int, tuple[int, int]]:
    frame = result.increments
    return {int(r.cluster_id): (int(r.impressions), int(r.engagements)) for r in frame.itertuples()}


def hides(result) -> dict[int, int]:
    return {int(r.cluster_id): int(r.hides) for r in result.increments.itertuples()}


def test_impressions_and_engagements_go_to_the_serving_cluster() -> None:
    minute = timedelta(minutes=1)
    result = reward_increments(
        served(),
        events((7, "impression", minute), (8, "impression", minute), (9, "impression", minute),
               (7, "click", 2 * minute), (7, "save", 3 * minute), (9, "closeup", 2 * minute)),
        window=WINDOW,
    )  # fmt: skip
    assert counts(result) == {50: (2, 1), 51: (1, 1)}
    assert set(result.increments["user_id"]) == {5}
    assert result.latest_event_ts[50] == T + 2 * minute  # the save adds no second credit


def test_late_engagement_and_unknown_items_are_not_credited() -> None:
    """A late click still says the pin was shown (an impression), but earns no engagement."""
    result = reward_increments(
        served(),
        events((7, "click", 2 * WINDOW), (8, "long_click", WINDOW), (99, "click", WINDOW)),
        window=WINDOW,
    )
    assert counts(result) == {50: (2, 1)}
    assert result.unmatched == 1


def test_hides_count_once_and_conversions_earn_nothing() -> None:
    minute = timedelta(minutes=1)
    result = reward_increments(
        served(),
        events((7, "hide", minute), (7, "hide", 2 * minute), (8, "checkout", minute),
               (9, "hide", 2 * WINDOW)),
        window=WINDOW,
    )  # fmt: skip
    assert hides(result) == {50: 1, 51: 0}
    assert counts(result) == {50: (1, 0), 51: (1, 0)}  # the checkout is no reward event
    assert result.credited.hidden == {(1, 7)}


def test_replayed_feedback_counts_once() -> None:
    batch = events((7, "impression", WINDOW / 2), (7, "click", WINDOW / 2))
    first = reward_increments(served(), batch, window=WINDOW)
    again = reward_increments(
        served(), pd.concat([batch, batch]), window=WINDOW, credited=first.credited
    )
    assert counts(first) == {50: (1, 1)}
    assert again.increments.empty
    assert first.credited.shown == {(1, 7)} and first.credited.engaged == {(1, 7)}
    assert again.credited == Credited()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"feedback\.kind"):
        reward_increments(served(), events((7, "like", WINDOW)), window=WINDOW)


def test_the_api_spells_out_every_feedback_kind() -> None:
    from typing import get_args

    from pinfeed.traffic.records import FEEDBACK_KINDS
    from serving.http.api import FeedbackKind

    assert get_args(FeedbackKind) == FEEDBACK_KINDS
