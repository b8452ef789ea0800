"""pinfeed: one set of feature definitions for training and serving a recommender.

The package `pinfeed` is the core every part shares: the event schema and its validation, the
config base and errors, calibration, utility and query selection, the synthetic generator, the
importer, and the artifacts contract (`pinfeed.artifacts`). The `pinfeed` command lives in
`pinfeed_cli`, the top layer (docs/architecture.md).
"""

__version__ = "0.1.0"
