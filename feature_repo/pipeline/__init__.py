"""The offline feature pipeline: event set -> the feature tables of `feature_repo.tables`
(daily point-in-time snapshots, pin content, dwell statistics, interest clusters with stable
ids, cluster rewards)."""

from feature_repo.pipeline.build import FeatureBuildResult, build_features
from feature_repo.pipeline.config import FeatureConfig
from feature_repo.pipeline.rewards import compute_cluster_rewards

__all__ = ["FeatureBuildResult", "FeatureConfig", "build_features", "compute_cluster_rewards"]
