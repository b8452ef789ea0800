"""The QuerySelector stage: which query pins feed retrieval on this request.

The draw itself is `pinfeed.query_selection` (the same code the closed-loop simulator runs);
this stage only maps a request onto it. A request with `context_pin_id` (a related-pins
surface) uses that pin as its only query, with no cluster (`NO_CLUSTER`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinfeed.query_selection import SelectionConfig, UserClusters, select_queries

NO_CLUSTER = -1
"""Source cluster of candidates not drawn from a user cluster (context pin, popular pins)."""


@dataclass(frozen=True)
class Queries:
    """The drawn queries, [n] each; `probabilities` [K] over the user's clusters (or empty)."""

    cluster_ids: np.ndarray
    query_pin_ids: np.ndarray
    probabilities: np.ndarray


class QuerySelector:
    """Draws `config.n_queries` clusters per request by reward (or count)."""

    def __init__(self, config: SelectionConfig, global_reward: float = 0.0) -> None:
        self.config = config
        self.global_reward = global_reward

    def select(
        self,
        request_id: int,
        clusters: UserClusters | None,
        rewards: np.ndarray | None,
        context_pin_id: int | None,
    ) -> Queries | None:
        """The queries of one request; None when there is nothing to draw from (cold start)."""
        if context_pin_id is not None:
            return Queries(
                cluster_ids=np.array([NO_CLUSTER], dtype=np.int64),
                query_pin_ids=np.array([context_pin_id], dtype=np.int64),
                probabilities=np.zeros(0),
            )
        if clusters is None or len(clusters.cluster_ids) == 0:
            return None
        if self.config.policy == "reward" and rewards is None:
            rewards = np.full(len(clusters.cluster_ids), np.nan)
        selection = select_queries(request_id, clusters, rewards, self.config, self.global_reward)
        return Queries(
            cluster_ids=np.asarray(selection.cluster_ids, dtype=np.int64),
            query_pin_ids=np.asarray(selection.query_pin_ids, dtype=np.int64),
            probabilities=selection.probabilities,
        )
