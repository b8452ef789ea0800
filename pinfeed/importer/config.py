"""What the importer may be told (ImportConfig) and what it reports back (ImportResult)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DAY_S = 86_400.0


class ImportConfig(BaseModel):
    """Knobs of `import_interactions`. Defaults suit a homefeed-style log with dwell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long_click_threshold_s: float = Field(30.0, gt=0)
    """A click is a long click when its dwell reaches this (stored in EventSetMeta)."""
    attach_window_s: float = Field(DAY_S, gt=0)
    """An engagement row joins the latest impression of the same (user, item) at most this many
    seconds before it; without one, it creates an impression at its own time."""
    conversion_window_s: float = Field(7 * DAY_S, gt=0)
    """A conversion takes the request_id of the latest impression of the same (user, item) at
    most this many seconds before it (conversions arrive hours or days after the click)."""
    missing_click_dwell_s: float = Field(0.0, ge=0)
    """Dwell given to a click logged without dwell_s (0: a short click). long_click rows without
    dwell_s get the threshold instead, so they stay long clicks."""
    embedding_dim: int = Field(32, ge=2)
    """Length of every pin's content embedding."""
    min_item_engagements: int = Field(2, ge=1)
    """Items engaged by fewer distinct users get the hashed fallback embedding, not a learned one."""
    n_topics: int = Field(16, ge=0)
    """k-means clusters over learned/given embeddings give pins.topic; 0 leaves every topic -1."""
    item_embeddings: Path | None = None
    """Optional parquet (item_id, embedding) whose vectors replace learned ones where given."""


@dataclass(frozen=True)
class ImportResult:
    """Counts that account for every row: rows_read = rows_imported + rows_rejected."""

    out: Path
    rows_read: int
    rows_imported: int
    rows_rejected: int
    duplicates_merged: int
    """Imported rows that repeated an impression (same user, item, time), an engagement already on
    the same impression, or a conversion (same user, item, time, kind)."""
    impressions_synthesised: int
    """Impressions created for engaged rows that had no impression within the attach window."""
    long_clicks_below_threshold: int
    """Impressions whose long_click rows all carried a dwell below the threshold: kept as clicks."""
    impressions: int
    conversions: int
    users: int
    pins: int
    embeddings_learned: int
    embeddings_given: int
    embeddings_fallback: int
    has_impressions: bool
    rejects: Path | None = None

    def summary(self) -> dict[str, object]:
        """The counts as plain values, in reading order (for the CLI's table)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
