"""pinfeed's processes import Feast without typeguard's instrumentation (pinfeed/feast_import.py),
`PINFEED_FEAST_TYPECHECKS=1` brings the checks back, and a process that imported Feast first
(the `feast` command) keeps them. Each case runs in a fresh interpreter: this test process
imported Feast long ago."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distributions

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pinfeed.feast_import import KEEP_TYPECHECKS_ENV

PACKAGES_THAT_IMPORT_FEAST = ("feature_repo", "training", "evaluation", "serving", "benchmarks")

# A wrongly typed definition, built after `{first}` is imported.
BUILD_A_BAD_ENTITY = """
import json
{first}
from feast import Entity
try:
    Entity(name=5, join_keys=["user_id"])
    print(json.dumps({{"error": None}}))
except Exception as error:
    print(json.dumps({{"error": type(error).__name__, "message": str(error)}}))
"""

# Whether importing a package alone (no Feast yet) swapped typeguard's decorator.
SWAPPED = """
import json, typeguard
import {package}
print(json.dumps({{"swapped": typeguard.typechecked.__module__ == "pinfeed.feast_import"}}))
"""


def _fresh_python(code: str, keep_typechecks: bool = False) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != KEEP_TYPECHECKS_ENV}
    if keep_typechecks:
        env[KEEP_TYPECHECKS_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", PACKAGES_THAT_IMPORT_FEAST)
def test_each_package_that_imports_feast_skips_the_typechecks_first(package: str) -> None:
    assert _fresh_python(SWAPPED.format(package=package)) == {"swapped": True}


def test_pinfeed_processes_build_feast_definitions_without_typeguard() -> None:
    found = _fresh_python(BUILD_A_BAD_ENTITY.format(first="import feature_repo"))
    assert found == {"error": None}


def test_the_environment_switch_keeps_feasts_typechecks() -> None:
    found = _fresh_python(
        BUILD_A_BAD_ENTITY.format(first="import feature_repo"), keep_typechecks=True
    )
    assert found["error"] == "TypeCheckError"
    assert 'argument "name" (int) is not an instance of str' in str(found["message"])


def test_a_process_that_imported_feast_first_keeps_its_typechecks() -> None:
    """The `feast` command's case: `feast apply` still validates the definitions."""
    found = _fresh_python(BUILD_A_BAD_ENTITY.format(first="import feast\nimport feature_repo"))
    assert found["error"] == "TypeCheckError"


def test_feast_is_the_only_installed_package_that_runs_typeguard() -> None:
    """The switch is process-wide: a second package decorating with `@typechecked` would lose
    its checks too, so adding one must be a decision."""
    users = set()
    for dist in distributions():
        for line in dist.requires or []:
            requirement = Requirement(line)
            needed = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            if canonicalize_name(requirement.name) == "typeguard" and needed:
                users.add(canonicalize_name(dist.metadata["Name"] or "?"))
    assert users - {"pinfeed"} == {"feast"}  # pinfeed requires it for the switch
