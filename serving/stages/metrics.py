"""What the Recommender tells an operator's dashboard: answers by kind and where a request's
time goes, as Ray Serve metrics (`ray.serve.metrics`, exported with Ray's Prometheus metrics,
tagged with the deployment and replica), plus this replica's own totals for `status`.

- `pinfeed_answers_total{kind}`: kind = ok | degraded | cold_start.
- `pinfeed_stage_ms{stage}`: stage = prepare (online reads, query selection, retrieval, ranker
  inputs), rank (the Ranker handle call: hop, batch wait, ORT), finish (scorer, top k).
- `pinfeed_cold_known_users_total`: cold-start answers for users the offline store knows (an
  online store that lost them; `serving.stages.store_health`).
- `pinfeed_feature_age_seconds{view}`: age of the newest online value of each serving view.
- `pinfeed_ranked_locally_total{reason}`: requests the Recommender ranked itself because the
  Ranker deployment was lost (its replica died) or slow (no answer within
  `ranker.local_after_s`).
"""

from __future__ import annotations

from collections import Counter as Tally

from ray.serve.metrics import Counter, Gauge, Histogram

STAGE_MS_BOUNDARIES = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]
STAGES = ("prepare", "rank", "finish")


def answer_kind(degraded: bool, cold_start: bool) -> str:
    return "degraded" if degraded else "cold_start" if cold_start else "ok"


class RequestMetrics:
    """Create inside a replica (Serve metrics need the replica context)."""

    def __init__(self) -> None:
        self.answers = Counter(
            "pinfeed_answers_total",
            description="Recommender answers by kind: ok, degraded (store down), cold_start.",
            tag_keys=("kind",),
        )
        self.stage_ms = Histogram(
            "pinfeed_stage_ms",
            description="Milliseconds per request in each Recommender stage.",
            boundaries=STAGE_MS_BOUNDARIES,
            tag_keys=("stage",),
        )
        self.cold_known = Counter(
            "pinfeed_cold_known_users_total",
            description="Cold-start answers for users the offline store knows.",
        )
        self.feature_age = Gauge(
            "pinfeed_feature_age_seconds",
            description="Age of the newest online value of each serving feature view.",
            tag_keys=("view",),
        )
        self.ranked_locally = Counter(
            "pinfeed_ranked_locally_total",
            description="Requests ranked in the Recommender: the Ranker was lost or slow.",
            tag_keys=("reason",),
        )
        self.totals: Tally[str] = Tally()

    def record(
        self, degraded: bool, cold_start: bool, seconds: dict[str, float], known_user: bool = False
    ) -> None:
        kind = answer_kind(degraded, cold_start)
        self.answers.inc(tags={"kind": kind})
        self.totals[kind] += 1
        if cold_start and known_user:
            self.cold_known.inc()
            self.totals["cold_known_user"] += 1
        for stage, value in seconds.items():
            self.stage_ms.observe(value * 1000.0, tags={"stage": stage})

    def record_ages(self, ages_s: dict[str, float]) -> None:
        for view, age in ages_s.items():
            self.feature_age.set(age, tags={"view": view})

    def record_local_rank(self, reason: str) -> None:
        self.ranked_locally.inc(tags={"reason": reason})
        self.totals[f"ranked_locally_{reason}"] += 1
