"""pinfeed's processes import Feast without typeguard's instrumentation (pinfeed/feast_import.py),
and `PINFEED_FEAST_TYPECHECKS=1` brings the checks back. Each case runs in a fresh interpreter:
this test process imported Feast long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distributions

from packaging.requirements import Requirement

from pinfeed.feast_import import KEEP_TYPECHECKS_ENV

# A wrongly typed definition, built the way the feature repo builds its own.
PROBE = """
import json
import feature_repo  # the package, as every pinfeed process imports it before Feast
from feast import Entity
try:
    Entity(name=5, join_keys=["user_id"])
    print(json.dumps({"error": None}))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


def _probe(keep_typechecks: bool) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k != KEEP_TYPECHECKS_ENV}
    if keep_typechecks:
        env[KEEP_TYPECHECKS_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pinfeed_processes_build_feast_definitions_without_typeguard() -> None:
    assert _probe(keep_typechecks=False) == {"error": None}


def test_the_environment_switch_keeps_feasts_typechecks() -> None:
    found = _probe(keep_typechecks=True)
    assert found["error"] == "TypeCheckError"
    assert 'argument "name" (int) is not an instance of str' in (found["message"] or "")


def test_feast_is_the_only_installed_package_that_runs_typeguard() -> None:
    """The switch is process-wide: a second package decorating with `@typechecked` would lose
    its checks too, so adding one must be a decision."""
    users = set()
    for dist in distributions():
        for line in dist.requires or []:
            requirement = Requirement(line)
            needed = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if requirement.name == "typeguard" and needed:
                users.add(dist.metadata["Name"].lower())
    assert users - {"pinfeed"} == {"feast"}  # pinfeed requires it for the switch
