"""Importer for real interaction logs: `user_id, item_id, timestamp, event[, dwell_s][, kind]`
(CSV or parquet) mapped onto the event schema of `pinfeed.schema`.

Modules, in pipeline order: reader (files, timestamps), rows (row checks, rejects), mapping
(external ids -> contiguous ids), impressions (engagements onto impressions), embeddings
(co-engagement SVD, fallbacks, topics), assemble (EventSet), pipeline (import_interactions).
"""

from pinfeed.importer.config import ImportConfig, ImportResult
from pinfeed.importer.pipeline import import_interactions

__all__ = ["ImportConfig", "ImportResult", "import_interactions"]
