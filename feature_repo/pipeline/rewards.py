"""Cluster (query) reward: the engagement rate of the impressions each interest cluster
produced (design §4, seeds/query_reward.txt), smoothed so a cluster without data still gets
picked now and then.

Attribution of an impression to one cluster of its user, first rule that applies:
1. its `cluster_id`, when that is one of the user's current clusters;
2. the user's cluster whose members hold its `query_pin_id`;
3. (when pin embeddings are given) the user's cluster whose medoid is nearest (cosine) to the
   query pin, or to the impressed pin itself when no query pin was logged.
Impressions that none of these place are not counted.

Per cluster: impressions, engagements (any of closeup, save, click, long_click) and
`reward = (engagements + r0 * m) / (impressions + m)`, where a hidden impression (the `hide`
flag, the seed's negative engagement) counts as `1 + hide_weight` impressions, so hides pull a
cluster's reward down by as much as `hide_weight` more unengaged impressions would; r0 is the user's pooled
engagement rate over their attributed impressions, or the global pooled rate for a user with
none (the seed's "average weight where there is no data yet"), and m = reward_prior_weight.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feature_repo.pipeline.activity import flag
from feature_repo.pipeline.clusters import PinEmbeddings
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.snapshots import datetime_us, smoothed_rate, to_table, ts_us
from feature_repo.tables import CLUSTER_REWARD, EVENT_TIMESTAMP
from pinfeed.errors import DataNotFoundError
from pinfeed.schema import ENGAGEMENTS

_PAIR_CHUNK = 500_000
"""(impression, cluster) pairs scored at once by the nearest-medoid rule."""


def current_clusters(clusters: pa.Table, as_of_us: int) -> pd.DataFrame:
    """Each user's clusters from their latest `user_clusters` row stamped at or before
    `as_of_us`: columns user_id, cluster_id, medoid_pin_id, one row per cluster."""
    stamps = ts_us(clusters.column(EVENT_TIMESTAMP))
    rows = clusters.filter(pa.array(stamps <= as_of_us))
    frame = pd.DataFrame(
        {"user_id": rows.column("user_id").to_numpy(), "stamp": ts_us(rows.column(EVENT_TIMESTAMP))}
    )
    latest = frame.sort_values(["user_id", "stamp"]).drop_duplicates("user_id", keep="last").index
    rows = rows.take(pa.array(latest.to_numpy()))
    ids = rows.column("cluster_ids").combine_chunks()
    parents = pc.list_parent_indices(ids).to_numpy()
    return pd.DataFrame(
        {
            "user_id": rows.column("user_id").to_numpy()[parents],
            "cluster_id": pc.list_flatten(ids).to_numpy(),
            "medoid_pin_id": pc.list_flatten(
                rows.column("medoid_pin_ids").combine_chunks()
            ).to_numpy(),
        }
    )


NO_ID = -1
"""Stands for a null query_pin_id / cluster_id inside the frames (ids are non-negative)."""


def _impression_frame(impressions: pa.Table, since_us: int | None, as_of_us: int) -> pd.DataFrame:
    """user_id, pin_id, query_pin_id, cluster_id (NO_ID for null), engaged; rows in window."""
    moments = ts_us(impressions.column("event_ts"))
    keep = moments < as_of_us
    if since_us is not None:
        keep &= moments >= since_us
    engaged = np.zeros(impressions.num_rows, bool)
    for name in ENGAGEMENTS:
        engaged |= flag(impressions, name) > 0
    frame = pd.DataFrame(
        {
            name: pc.fill_null(impressions.column(name), NO_ID).to_numpy().astype(np.int64)
            for name in ("user_id", "pin_id", "query_pin_id", "cluster_id")
        }
    )
    frame["engaged"] = engaged
    names = impressions.column_names
    frame["hidden"] = flag(impressions, "hide") > 0 if "hide" in names else False
    return frame[keep].reset_index(drop=True)


def _nearest_medoid(
    frame: pd.DataFrame, owned: pd.DataFrame, embeddings: PinEmbeddings
) -> pd.DataFrame:
    """(row, cluster_id) of the nearest medoid (cosine) for each row of `frame` (row, user_id,
    ref_pin); scored once per distinct (user, ref_pin); rows whose reference pin has no
    embedding are left out."""
    frame = frame[embeddings.known(frame["ref_pin"].to_numpy())]
    owned = owned[embeddings.known(owned["medoid_pin_id"].to_numpy())]
    pairs = frame[["user_id", "ref_pin"]].drop_duplicates().merge(owned, on="user_id")
    scores = np.empty(len(pairs))
    for start in range(0, len(pairs), _PAIR_CHUNK):
        part = pairs.iloc[start : start + _PAIR_CHUNK]
        scores[start : start + _PAIR_CHUNK] = np.einsum(
            "nd,nd->n",
            embeddings.rows(part["ref_pin"].to_numpy()),
            embeddings.rows(part["medoid_pin_id"].to_numpy()),
        )
    pairs["score"] = scores
    best = pairs.sort_values(
        ["user_id", "ref_pin", "score", "cluster_id"], ascending=[True, True, False, True]
    ).drop_duplicates(["user_id", "ref_pin"])
    return frame.merge(best[["user_id", "ref_pin", "cluster_id"]], on=["user_id", "ref_pin"])[
        ["row", "cluster_id"]
    ]


def attribute(
    frame: pd.DataFrame,
    owned: pd.DataFrame,
    members: pd.DataFrame,
    embeddings: PinEmbeddings | None,
) -> np.ndarray:
    """Cluster id per impression row of `frame` (`_impression_frame`), NO_ID where no rule
    applies; `owned` is `current_clusters`, `members` the cluster_members frame. Shape [n]."""
    logged = frame["cluster_id"].to_numpy()
    owner = pd.Series(owned["user_id"].to_numpy(), index=owned["cluster_id"].to_numpy())
    logged_owner = owner.reindex(logged).to_numpy()
    result = np.where(logged_owner == frame["user_id"].to_numpy(), logged, NO_ID)
    rows = frame.assign(row=np.arange(len(frame)))
    by_query = rows[(result == NO_ID) & (frame["query_pin_id"].to_numpy() != NO_ID)].merge(
        members.rename(columns={"pin_id": "query_pin_id", "cluster_id": "member_of"}),
        on=["user_id", "query_pin_id"],
    )
    result[by_query["row"].to_numpy()] = by_query["member_of"].to_numpy()
    open_rows = rows[result == NO_ID]
    if embeddings is not None and len(open_rows):
        query = open_rows["query_pin_id"].to_numpy()
        open_rows = open_rows.assign(
            ref_pin=np.where(query != NO_ID, query, open_rows["pin_id"].to_numpy())
        )
        nearest = _nearest_medoid(open_rows[["row", "user_id", "ref_pin"]], owned, embeddings)
        result[nearest["row"].to_numpy()] = nearest["cluster_id"].to_numpy()
    return result


def compute_cluster_rewards(
    impressions: pa.Table,
    members: pa.Table,
    clusters: pa.Table,
    since: datetime | None = None,
    config: FeatureConfig | None = None,
    *,
    pins: pa.Table | None = None,
    as_of: datetime | None = None,
) -> pa.Table:
    """One `cluster_reward` row per current cluster (CLUSTER_REWARD schema), stamped `as_of`.

    impressions: IMPRESSION_SCHEMA rows; those with since <= event_ts < as_of are counted.
    members: cluster_members (user_id, cluster_id, pin_id) of the clusters in `clusters`.
    clusters: user_clusters rows; each user's latest row at or before `as_of` is used.
    pins: PIN_SCHEMA rows, enabling the nearest-medoid rule; without them impressions the
    first two rules cannot place are not counted.
    as_of: default, the latest user_clusters stamp.
    """
    config = config or FeatureConfig()
    if clusters.num_rows == 0:
        raise DataNotFoundError("no user_clusters rows: run `pinfeed features build` first")
    as_of_us = datetime_us(as_of) if as_of else int(ts_us(clusters.column(EVENT_TIMESTAMP)).max())
    owned = current_clusters(clusters, as_of_us)
    frame = _impression_frame(impressions, datetime_us(since) if since else None, as_of_us)
    frame = frame[frame["user_id"].isin(owned["user_id"])].reset_index(drop=True)
    embeddings = PinEmbeddings.from_pins(pins) if pins is not None else None
    frame["cluster"] = attribute(frame, owned, members.to_pandas(), embeddings)
    counted = frame[frame["cluster"] != NO_ID]
    weight = 1 + config.hide_weight * counted["hidden"].astype(np.int64)
    per_cluster = (
        counted.assign(weight=weight)
        .groupby("cluster")
        .agg(size=("weight", "sum"), sum=("engaged", "sum"))
    )
    table = owned.merge(per_cluster, left_on="cluster_id", right_index=True, how="left")
    impressions_n = table["size"].fillna(0).to_numpy(np.int64)
    engagements = table["sum"].fillna(0).to_numpy(np.int64)
    r0 = _prior_reward(table["user_id"], impressions_n, engagements, config.reward_fallback)
    reward = smoothed_rate(engagements, impressions_n, r0, config.reward_prior_weight)
    order = np.lexsort((table["cluster_id"].to_numpy(), table["user_id"].to_numpy()))
    return to_table(
        {
            "cluster_id": table["cluster_id"].to_numpy(np.int64)[order],
            EVENT_TIMESTAMP: np.full(len(table), as_of_us, np.int64),
            "user_id": table["user_id"].to_numpy(np.int64)[order],
            "reward_impressions": impressions_n[order],
            "reward_engagements": engagements[order],
            "reward": reward[order],
            "reward_has_data": impressions_n[order] > 0,
        },
        CLUSTER_REWARD,
    )


def _prior_reward(
    user_ids: pd.Series, impressions: np.ndarray, engagements: np.ndarray, fallback: float
) -> np.ndarray:
    """r0 per cluster row [C]: the user's pooled rate, else the global pooled rate, else
    `fallback` when nothing at all was attributed."""
    total_imp = impressions.sum()
    global_rate = engagements.sum() / total_imp if total_imp > 0 else fallback
    per_user = pd.DataFrame(
        {"user_id": user_ids.to_numpy(), "imp": impressions, "eng": engagements}
    )
    sums = per_user.groupby("user_id")[["imp", "eng"]].transform("sum")
    user_imp = sums["imp"].to_numpy()
    return np.where(user_imp > 0, sums["eng"].to_numpy() / np.maximum(user_imp, 1), global_rate)
