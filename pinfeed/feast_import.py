"""Import Feast without typeguard's instrumentation, where that is safe, because it halves
what every pinfeed process pays to start.

Feast 0.67 decorates its definition classes (`FeatureView`, `Entity`, `Field`, the sources)
with typeguard 4's `@typechecked`, which fetches each class's source, re-parses and recompiles
it at import (typeguard#468): about 1.8 s of a 4.1 s `import feast` on this 2-core box, 7 of
14 s when it is loaded. Every CLI command, Ray job driver, Ray Train worker and Serve replica
pays it, and a replica that moves off a drained node pays it before it answers again.

The checks only catch a definition built with a wrong type, and the definitions are checked
where they are written: `feast apply` / `feast plan` (the `feast` command imports Feast itself
and keeps them) and the tests that run it. Processes that only use the definitions skip them.
`PINFEED_FEAST_TYPECHECKS=1` keeps them everywhere.

The top packages that import Feast (`feature_repo`, `training`, `evaluation`, `serving`,
`benchmarks`) call `skip_feast_typechecks()` in their `__init__`, which Python runs before any
of their modules. Where Feast is already imported (a user imported it first) this does nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

KEEP_TYPECHECKS_ENV = "PINFEED_FEAST_TYPECHECKS"


def skip_feast_typechecks() -> bool:
    """Make typeguard's `@typechecked` return what it decorates, before Feast imports it.

    Returns whether it did. Feast is the only typeguard user in the lock file; a package that
    adds one is told so by `tests/unit/test_feast_import.py`."""
    if os.environ.get(KEEP_TYPECHECKS_ENV) == "1" or "feast" in sys.modules:
        return False
    import typeguard

    typeguard.typechecked = _unchecked
    return True


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """`@typechecked` and `@typechecked(...)` without the instrumentation."""
    if target is None:
        return _identity
    return target


def _identity(target: Callable[..., Any]) -> Callable[..., Any]:
    return target
