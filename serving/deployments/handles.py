"""Which failures of a call to another deployment mean that a replica was lost (its process
died, it is restarting, none is running), as opposed to a replica at capacity (Serve's
`BackPressureError`: the caller should back off) or a bug (the replica ran the call and raised).

A lost replica is the one failure a caller can route around, so the callers do: the Ingress
sends an idempotent `/recommend` again (Serve's router drops a replica it saw die, so the retry
goes to another one, or waits for the replacement), and the Recommender ranks in-process when
the Ranker is lost (`serving.deployments.recommender`).
"""

from __future__ import annotations

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
