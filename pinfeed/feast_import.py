"""Import Feast without typeguard's instrumentation, where that is safe: it is about 2 s of
each pinfeed process's start here.

Feast 0.67 decorates its definition classes (`FeatureView`, `Entity`, `Field`, the sources)
with typeguard 4's `@typechecked`, which fetches each class's source, re-parses and recompiles
it at import (typeguard#468): about 1.8 s of a 4.1 s `import feast` on this 2-core box, 7 of
14 s when it is loaded. Every CLI command, Ray job driver, Ray Train worker and Serve replica
pays it, and a replica that moves off a drained node pays it before it answers again.

The checks only catch a definition built with a wrong type. The `feast` command imports Feast
itself, so `feast plan` / `feast apply` keep them (the tests run `feast apply` on the shipped
definitions); `pinfeed features apply` and `pinfeed run` register the definitions without
them, so validate edited definitions with `feast -c <home>/feature_repo plan`, or set
`PINFEED_FEAST_TYPECHECKS=1` (in the environment of `ray start` too, for Ray's workers).

The switch is process-wide: typeguard's `typechecked` itself is replaced, for Feast and any
later user (Feast is the only one installed; `tests/unit/test_feast_import.py` checks that).
The top packages that import Feast (`feature_repo`, `training`, `evaluation`, `serving`,
`benchmarks`) call `skip_feast_typechecks()` in their `__init__`, which Python runs before any
of their modules. Where Feast is already imported (the `feast` command, or a user who imported
it first) this does nothing, and without typeguard (the GPU harness's bundle) neither.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

KEEP_TYPECHECKS_ENV = "PINFEED_FEAST_TYPECHECKS"

T = TypeVar("T")


def skip_feast_typechecks() -> None:
    """Make typeguard's `@typechecked` return what it decorates, before Feast imports it."""
    if os.environ.get(KEEP_TYPECHECKS_ENV) == "1" or "feast" in sys.modules:
        return
    try:
        import typeguard
    except ModuleNotFoundError:  # no Feast either: the GPU harness ships neither
        return
    typeguard.typechecked = _unchecked


def _unchecked(target: T | None = None, **_options: object) -> T | Callable[[T], T]:
    """`@typechecked` and `@typechecked(...)` (typeguard's options are keyword-only), without
    the instrumentation."""
    if target is None:
        return _identity
    return target


def _identity(target: T) -> T:
    return target
