"""pinfeed: one set of feature definitions for training and serving a recommender.

The package `pinfeed` holds what every part shares: config models, the event schema and its
validation, the synthetic generator, the importer and the `pinfeed` CLI.
"""

__version__ = "0.1.0"
