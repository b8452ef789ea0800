"""The Serve settings `pinfeed serve` starts Ray with: defaults fill what is unset, an
operator's own value wins (so the benchmark can compare both modes)."""

from __future__ import annotations

from serving.environment import SERVE_ENVIRONMENT, serve_environment


def test_defaults_fill_only_what_is_unset() -> None:
    environ = {"PATH": "/bin"}
    assert serve_environment(environ)["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert environ == {"PATH": "/bin", **SERVE_ENVIRONMENT}


def test_an_operator_value_wins() -> None:
    environ = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    assert serve_environment(environ)["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert environ == {**SERVE_ENVIRONMENT, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
