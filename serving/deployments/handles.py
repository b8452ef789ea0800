"""Which failures of a call to another deployment mean that a replica was lost (its process
died, it is restarting, none is running), as opposed to a replica at capacity (Serve's
`BackPressureError`: the caller should back off) or a bug (the replica ran the call and raised).

A lost replica is the one failure a caller can route around, so the callers do: the Ingress
sends an idempotent `/recommend` again (Serve's router drops a replica it saw die, so the retry
goes to another one, or waits for the replacement), and the Recommender ranks in-process when
the Ranker is lost (`serving.deployments.recommender`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

LOST_REPLICA = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
"""RayActorError covers ActorDiedError (the process is gone) and ActorUnavailableError (it
does not answer now, perhaps restarting)."""


def root_cause(error: BaseException) -> BaseException:
    """What the failing replica raised: a replica's failure arrives as a RayTaskError whose
    `cause` is its exception, itself perhaps a failed call of the replica's own handle."""
    cause = error
    while isinstance(cause, RayTaskError) and cause.cause is not None and cause.cause is not cause:
        cause = cause.cause
    return cause


def lost_replica(error: BaseException) -> bool:
    """True when `error` (a handle call's failure) means a replica on the way was lost."""
    return isinstance(root_cause(error), LOST_REPLICA)


class Detour:
    """When a caller should skip a deployment it failed to reach and take its own way round
    (the Recommender ranking in-process): for `skip_s` after a failure every call detours at
    once instead of waiting out the same failure again; after that one call at a time probes
    the deployment (the others keep detouring) until one gets through.

    Event-loop state, no lock: a replica's handle calls all start and end on its event loop.
    """

    def __init__(self, skip_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.skip_s = skip_s
        self.clock = clock
        self.reason: str | None = None
        """Why the last call failed ("lost", "slow"); None while calls get through."""
        self._until = float("-inf")
        self._probing = False

    def take(self) -> bool:
        """True: call the deployment (the caller then reports `through` or `failed`, or
        `abandoned` if it stopped waiting for another reason); False: detour now."""
        if self.reason is None:
            return True
        if self._probing or self.clock() < self._until:
            return False
        self._probing = True
        return True

    def through(self) -> None:
        self.reason, self._probing = None, False

    def failed(self, reason: str) -> None:
        self.reason, self._probing = reason, False
        self._until = self.clock() + self.skip_s

    def abandoned(self) -> None:
        """The call was cancelled (its request timed out): let another call probe."""
        self._probing = False
