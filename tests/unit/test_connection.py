"""`REDIS_URL` and what it points at (`pinfeed.connection`): one server or a Redis Cluster,
checked at once with errors that name the field and never the password; clients made on first
use, so a log built while its Redis is down does not fail its owner's start."""

from __future__ import annotations

import pytest

from pinfeed.connection import RedisConnection, RedisTarget, parse_redis_url
from pinfeed.errors import ConfigError
from pinfeed.redis_server import free_port
from pinfeed.traffic.feedback_log import RedisFeedbackLog
from pinfeed.traffic.records import FeedbackRecord
from pinfeed.traffic.served import TRAFFIC_STORE_ERRORS


def test_one_server_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1:6390/13") == RedisTarget(
        nodes=(("127.0.0.1", 6390),), db=13
    )
    assert parse_redis_url("rediss://me:s%3Dcret@cache") == RedisTarget(
        nodes=(("cache", 6379),), username="me", password="s=cret", ssl=True
    )
    assert parse_redis_url("redis://[::1]:6379/0").nodes == (("::1", 6379),)


def test_cluster_urls_take_several_seed_nodes_and_database_0_only() -> None:
    target = parse_redis_url("redis+cluster://:pw@10.0.0.5:7000,10.0.0.6:7001")
    assert target == RedisTarget(
        nodes=(("10.0.0.5", 7000), ("10.0.0.6", 7001)), password="pw", cluster=True
    )
    assert parse_redis_url("rediss+cluster://10.0.0.5:7000/0").ssl
    with pytest.raises(ConfigError, match="database 0 only"):
        parse_redis_url("redis+cluster://10.0.0.5:7000/2")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://:hunter2@cache:6379", "scheme .http. is not one of"),
        ("http://default:hunter2", "scheme .http. is not one of"),
        ("redis://:hunter2@cache:6379/x", "database 'x' must be a number"),
        ("redis://:hunter2@a:1,b:2", "several hosts need the redis\\+cluster"),
        ("redis+cluster://:hunter2@", "names no host"),
        ("redis+cluster://:hunter2@a:1,b:port", "a node is not host:port"),
        ("redis://default:hunter2", "a node is not host:port"),
        ("rediss://:hunter2@cache:6379/0?ssl_cert_reqs=none", "query options"),
    ],
)
def test_a_bad_url_names_the_field_and_the_reason_not_the_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"redis_url: .*{reason}") as error:
        parse_redis_url(url)
    assert "hunter2" not in str(error.value)


def test_a_log_on_a_cluster_that_is_down_starts_and_its_calls_fail_as_a_store_error() -> None:
    """Nothing listens on the port: construction (a Serve replica's start) succeeds, and each
    call fails with an error the callers already treat as the store being down."""
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    connection = RedisConnection(url, timeout_s=0.5)
    log = RedisFeedbackLog(url, "pinfeed_down")
    record = FeedbackRecord(
        event_id="", request_id=1, pin_id=2, kind="click", event_ts="", user_id=3
    )
    for call in (lambda: connection.client.ping(), lambda: log.append([record])):
        with pytest.raises(TRAFFIC_STORE_ERRORS):
            call()
