"""Turning checked log rows into impressions with engagement flags, and conversions.

Rules (ImportConfig holds the numbers):
- impression rows with the same (user, item, time) are one impression (extras: duplicates).
- an engagement row (closeup, save, click, long_click) joins the latest impression of the same
  (user, item) at or before it, at most attach_window_s earlier. A second row of the same
  engagement on one impression is a duplicate (merged into the flag).
- engagement rows with no such impression create one at the time of the first of them; the
  following ones within the window join it (so a closeup and a click a few seconds apart make
  one impression, not two). Logs with no impression rows at all (implicit feedback) take this path
  for every row: engaged rows stand for impressions.
- dwell of an impression = the largest dwell of its click/long_click rows. A long_click row
  without dwell_s counts as the threshold; a click with no dwell anywhere gets
  missing_click_dwell_s. long_click is then derived as click and dwell >= threshold, so a
  long_click row whose own dwell is below the threshold ends as a plain click (counted).
  dwell_s on closeup, save, impression and conversion rows is ignored.
- conversions (same user, item, time and kind merged) take the latest impression of the same
  (user, item) within conversion_window_s before them, where one exists; they create none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pinfeed.importer.rows import CLICK, CLOSEUP, CONVERSION, IMPRESSION, LONG_CLICK, SAVE

FLAGS = {"closeup": CLOSEUP, "save": SAVE, "click": CLICK, "long_click": LONG_CLICK}
US = 1_000_000


@dataclass(frozen=True)
class Attached:
    """impressions: [I] user, pin, ts (µs), source_row, closeup, save, click, long_click, dwell
    (float64, NaN without a click). conversions: [C] user, pin, ts, kind, impression (row of
    `impressions` it follows, -1 if none)."""

    impressions: pd.DataFrame
    conversions: pd.DataFrame
    duplicates_merged: int
    synthesised: int
    long_clicks_below_threshold: int
    had_impression_rows: bool


@dataclass(frozen=True)
class AttachRules:
    long_click_threshold_s: float
    attach_window_s: float
    conversion_window_s: float
    missing_click_dwell_s: float


def build_impressions(rows: pd.DataFrame, rules: AttachRules) -> Attached:
    """rows: [R] columns row, user, pin (int64 ids), ts (µs), event, dwell, kind."""
    rows = rows.assign(key=_pair_key(rows))
    shown = rows[rows["event"] == IMPRESSION]
    base = shown.sort_values(["key", "ts", "row"]).drop_duplicates(["key", "ts"])
    impressions = pd.DataFrame(
        {
            "user": base["user"],
            "pin": base["pin"],
            "key": base["key"],
            "ts": base["ts"],
            "source_row": base["row"],
        }
    ).reset_index(drop=True)
    engaged = rows[rows["event"].isin(list(FLAGS.values()))].reset_index(drop=True)
    window = int(rules.attach_window_s * US)
    target = _attach(engaged, impressions, window)
    impressions, target, synthesised = _synthesise(engaged, impressions, target, window)
    flags, duplicates, below = _flags(engaged, target, len(impressions), rules)
    conversions, conversion_dups = _conversions(
        rows, impressions, int(rules.conversion_window_s * US)
    )
    return Attached(
        impressions=pd.concat([impressions.drop(columns="key"), flags], axis=1),
        conversions=conversions,
        duplicates_merged=len(shown) - len(base) + duplicates + conversion_dups,
        synthesised=synthesised,
        long_clicks_below_threshold=below,
        had_impression_rows=len(shown) > 0,
    )


def _pair_key(rows: pd.DataFrame) -> pd.Series:
    """One int64 per (user, pin), so as-of joins group on a single column."""
    n_pins = int(rows["pin"].max()) + 1 if len(rows) else 1
    return rows["user"].astype(np.int64) * n_pins + rows["pin"].astype(np.int64)


def _attach(left: pd.DataFrame, right: pd.DataFrame, tolerance_us: int) -> np.ndarray:
    """For each left row [L], the index of the latest right row with the same key at or before
    it, at most tolerance_us earlier; -1 where there is none. right's index is the result."""
    result = np.full(len(left), -1, dtype=np.int64)
    if left.empty or right.empty:
        return result
    probe = pd.DataFrame(
        {"key": left["key"].to_numpy(), "ts": left["ts"].to_numpy(), "pos": np.arange(len(left))}
    )
    found = pd.DataFrame(
        {
            "key": right["key"].to_numpy(),
            "ts": right["ts"].to_numpy(),
            "target": right.index.to_numpy(),
        }
    )
    joined = pd.merge_asof(
        probe.sort_values("ts", kind="stable"),
        found.sort_values("ts", kind="stable"),
        on="ts",
        by="key",
        direction="backward",
        tolerance=tolerance_us,
    )
    hit = joined["target"].notna().to_numpy()
    result[joined["pos"].to_numpy()[hit]] = joined["target"].to_numpy()[hit].astype(np.int64)
    return result


def _synthesise(
    engaged: pd.DataFrame, impressions: pd.DataFrame, target: np.ndarray, window: int
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Create impressions for engagement rows that found none. Each pass opens an impression at
    every orphan that starts a run (first of its pair, or more than `window` after the previous
    orphan of the pair); orphans too far from their run's start go round again."""
    parts = [impressions]
    created = 0
    pending = np.flatnonzero(target < 0)
    while len(pending):
        orphans = engaged.iloc[pending].assign(pos=pending).sort_values(["key", "ts", "row"])
        same_pair = orphans["key"].diff().eq(0).to_numpy()
        close = orphans["ts"].diff().le(window).to_numpy()
        anchors = orphans[~(same_pair & close)]
        new = pd.DataFrame(
            {
                "user": anchors["user"].to_numpy(),
                "pin": anchors["pin"].to_numpy(),
                "key": anchors["key"].to_numpy(),
                "ts": anchors["ts"].to_numpy(),
                "source_row": anchors["row"].to_numpy(),
            },
            index=pd.RangeIndex(
                len(impressions) + created, len(impressions) + created + len(anchors)
            ),
        )
        found = _attach(orphans, new, window)
        target[orphans["pos"].to_numpy()] = found
        parts.append(new)
        created += len(new)
        pending = np.flatnonzero(target < 0)
    return pd.concat(parts), target, created


def _flags(
    engaged: pd.DataFrame, target: np.ndarray, n: int, rules: AttachRules
) -> tuple[pd.DataFrame, int, int]:
    """Engagement flags and dwell [n] per impression; counts duplicate rows and long clicks
    demoted because their dwell is below the threshold."""
    event = engaged["event"].to_numpy()
    flags: dict[str, np.ndarray] = {}
    duplicates = 0
    for name, code in FLAGS.items():
        counts = np.bincount(target[event == code], minlength=n)
        flags[name] = counts > 0
        duplicates += int((counts - flags[name]).sum())
    dwell_in = engaged["dwell"].to_numpy()
    contribution = np.where(event == CLICK, dwell_in, np.nan)
    long_row = event == LONG_CLICK
    contribution[long_row] = np.where(
        np.isnan(dwell_in[long_row]), rules.long_click_threshold_s, dwell_in[long_row]
    )
    dwell = np.full(n, np.nan)
    np.fmax.at(dwell, target, contribution)
    click = flags["click"] | flags["long_click"]
    dwell = np.where(click, np.where(np.isnan(dwell), rules.missing_click_dwell_s, dwell), np.nan)
    long_click = click & (np.nan_to_num(dwell, nan=-1.0) >= rules.long_click_threshold_s)
    below = int((flags["long_click"] & ~long_click).sum())
    table = pd.DataFrame(
        {
            "closeup": flags["closeup"],
            "save": flags["save"],
            "click": click,
            "long_click": long_click,
            "dwell": dwell,
        }
    )
    return table, duplicates, below


def _conversions(
    rows: pd.DataFrame, impressions: pd.DataFrame, window: int
) -> tuple[pd.DataFrame, int]:
    converted = rows[rows["event"] == CONVERSION]
    unique = (
        converted.sort_values(["key", "ts", "row"])
        .drop_duplicates(["key", "ts", "kind"])
        .reset_index(drop=True)
    )
    found = _attach(unique, impressions, window)
    table = unique[["user", "pin", "ts", "kind"]].assign(impression=found)
    return table, len(converted) - len(unique)
