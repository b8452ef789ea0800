"""Ray Serve's process environment for this app: settings Ray reads from environment variables
when its processes start (the Serve controller, the proxy, every replica), so they must be in
the environment of whatever starts Ray (`ray start`, or the process that calls `ray.init`).

- `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (Ray 2.55+): replicas call each other over direct gRPC,
  the ingress replica takes HTTP itself, user code runs on the replica's own event loop.
  Measured on the 2-core box (`benchmarks/serve_load.py`, three runs each, back to back): best
  zero-error throughput 32.1 / 32.7 / 34.6 req/s against 23.9 / 25.6 / 29.5 without it,
  concurrency-1 p50 43-45 ms against 51-54 ms (docs/benchmarks.md).

- `RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=2`: in that mode a stopping ingress replica
  keeps taking requests for at least this long (default 30 s) so that an external load
  balancer notices it is going; a local Ray has no such balancer, and 30 s made every
  `pinfeed serve` shutdown (and every Serve test teardown) wait that long. Clusters keep
  Ray's default (ray_cluster.yaml does not set it).

Not set: `RAY_SERVE_ENABLE_HA_PROXY=1` (HAProxy ingress) binds every interface whatever the
configured host; a loopback-only default matters more on a laptop than the proxy's speed.

`pinfeed serve`, the benchmarks and the tests start their local Ray with these defaults; a
variable already in the environment wins (set `RAY_SERVE_THROUGHPUT_OPTIMIZED=0` to compare).
On a cluster started with `ray start` (ray_cluster.yaml), or under `serve run` against one,
export them on every node before `ray start`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

SERVE_ENVIRONMENT: Mapping[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


def serve_environment(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Put the defaults the environment does not already set into `environ` (call before
    starting a local Ray); returns the values a Ray started from this process runs with. A
    `ray.init()` that attaches to a running cluster (`ray start`, `RAY_ADDRESS`) keeps that
    cluster's environment, whatever this returns."""
    for name, value in SERVE_ENVIRONMENT.items():
        environ.setdefault(name, value)
    return {name: environ[name] for name in SERVE_ENVIRONMENT}
