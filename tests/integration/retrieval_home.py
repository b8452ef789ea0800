"""A tiny but complete project home for the retrieval tests: `pinfeed run`'s data steps on a
world of 300 users and 600 pins over 6 days (a few thousand positives, ~a hundred
conversions), built in a few seconds."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from pinfeed.home import ProjectHome
from pinfeed.run import run_pipeline
from tests.integration.test_feature_store import make_home

TINY_WORLD = {"users": 300, "pins": 600, "topics": 20, "days": 6}


def build_tiny_home(root: Path) -> ProjectHome:
    """Events, features, Feast registry and training sets of the tiny world under `root`."""
    home = make_home(root)
    run_pipeline(
        home,
        seed=3,
        console=Console(file=io.StringIO()),
        generator_overrides=TINY_WORLD,
        stop_after="training sets",
    )
    return home
