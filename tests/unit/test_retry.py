"""RetryPlan: what follows each failed attempt, decided without I/O.

Every policy here has `jitter=0.0`, so the delays the plan returns are exact.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolhttp import (
    ConnectError,
    ConnectTimeout,
    HTTPStatusError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    Retry,
    RetryError,
    ServerDisconnected,
    StaleConnectionError,
    TotalTimeout,
    TransportError,
)
from poolhttp._retry import RetryPlan, retry_after_seconds

ORIGIN = "http://api.example:80"


def request(method: str = "GET", *, key: bool = False, streamed: bool = False) -> Request:
    headers = {"Idempotency-Key": "k-1"} if key else None
    built = Request(method, "http://api.example/items", headers=headers)
    if streamed:
        built.stream = iter([b"chunk"])  # a body that cannot be sent twice
    return built


BASE_POLICY = Retry(backoff_factor=1.0, jitter=0.0)  # delays of 1, 2, 4 ... seconds


def plan(method: str = "GET", *, key: bool = False, streamed: bool = False,
         **policy: Any) -> RetryPlan:
    retry = dataclasses.replace(BASE_POLICY, **policy)
    return RetryPlan(retry, request(method, key=key, streamed=streamed))


def stale() -> ServerDisconnected:
    """The keep-alive race: a reused connection closed before any response byte."""
    return ServerDisconnected("server closed the connection", origin=ORIGIN, reused=True)


def respond(status: int, retry_after: str | None = None) -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return Response(status, headers=headers, request=request())


# -- the keep-alive race -----------------------------------------------------------------------


def test_stale_connection_is_resent_at_once_on_a_fresh_connection() -> None:
    retry_plan = plan(total=0)  # even with no retries allowed by the policy
    assert retry_plan.after_error(stale()) == 0.0
    assert retry_plan.fresh
    assert retry_plan.retried_stale
    assert retry_plan.policy.history == ()  # the policy's budget is not spent
    assert retry_plan.attempts == 1


def test_stale_connection_is_resent_only_once() -> None:
    retry_plan = plan(total=3)
    assert retry_plan.after_error(stale()) == 0.0
    assert retry_plan.after_error(stale()) == 1.0  # now an ordinary read retry, with backoff
    assert not retry_plan.fresh
    assert retry_plan.policy.history == ("read",)


def test_stale_post_raises_stale_connection_error() -> None:
    error = stale()
    with pytest.raises(StaleConnectionError, match="not idempotent") as caught:
        plan("POST").after_error(error)
    assert caught.value.__cause__ is error
    assert caught.value.origin == ORIGIN
    assert caught.value.reused
    assert caught.value.request_sent


def test_stale_post_with_an_idempotency_key_is_resent() -> None:
    retry_plan = plan("POST", key=True)
    assert retry_plan.after_error(stale()) == 0.0
    assert retry_plan.fresh


def test_stale_streamed_request_is_not_resent() -> None:
    error = stale()
    with pytest.raises(ServerDisconnected) as caught:
        plan(streamed=True).after_error(error)
    assert caught.value is error  # no retry was made, so the caller sees the error itself


@pytest.mark.parametrize("error", [
    ServerDisconnected("closed", origin=ORIGIN, reused=True, response_started=True),
    ServerDisconnected("closed", origin=ORIGIN, reused=False),
])
def test_disconnect_outside_the_race_is_an_ordinary_read_retry(error: TransportError) -> None:
    retry_plan = plan()
    assert retry_plan.after_error(error) == 1.0
    assert not retry_plan.fresh
    assert retry_plan.policy.history == ("read",)


def test_fresh_is_cleared_by_the_next_error() -> None:
    retry_plan = plan()
    retry_plan.after_error(stale())
    retry_plan.after_error(ReadError("reset", origin=ORIGIN))
    assert not retry_plan.fresh


# -- the policy: connect and read retries ------------------------------------------------------


@pytest.mark.parametrize("error", [ConnectError("refused", origin=ORIGIN),
                                   ConnectTimeout("slow", origin=ORIGIN, timeout=1.0)])
def test_connect_failure_is_retried_for_any_method(error: TransportError) -> None:
    retry_plan = plan("POST")
    assert retry_plan.after_error(error) == 1.0
    assert retry_plan.policy.history == ("connect",)


@pytest.mark.parametrize("error", [ReadError("reset", origin=ORIGIN),
                                   ReadTimeout("slow", origin=ORIGIN, timeout=5.0),
                                   RemoteProtocolError("garbage", origin=ORIGIN)])
def test_read_failure_is_retried_for_idempotent_methods(error: TransportError) -> None:
    assert plan("PUT").after_error(error) == 1.0
    with pytest.raises(type(error)) as caught:
        plan("POST").after_error(error)
    assert caught.value is error


def test_read_failure_of_a_keyed_post_is_retried() -> None:
    assert plan("POST", key=True).after_error(ReadError("reset", origin=ORIGIN)) == 1.0


def test_delays_follow_the_backoff_schedule() -> None:
    retry_plan = plan(total=3, backoff_factor=0.5)
    delays = [retry_plan.after_error(ReadError("reset", origin=ORIGIN)) for _ in range(3)]
    assert delays == [0.5, 1.0, 2.0]
    assert retry_plan.attempts == 3


def test_exhausted_policy_raises_retry_error_with_every_error() -> None:
    retry_plan = plan(total=2)
    errors = [ReadError(f"reset {n}", origin=ORIGIN) for n in range(3)]
    retry_plan.after_error(errors[0])
    retry_plan.after_error(errors[1])
    with pytest.raises(RetryError, match="3 attempts failed; the last one: reset 2") as caught:
        retry_plan.after_error(errors[2])
    assert caught.value.errors == errors
    assert caught.value.last_error is errors[2]
    assert caught.value.__cause__ is errors[2]
    assert caught.value.origin == ORIGIN


def test_per_kind_limit_applies_below_the_total() -> None:
    retry_plan = plan(total=10, connect=1)
    assert retry_plan.after_error(ConnectError("refused", origin=ORIGIN)) == 1.0
    with pytest.raises(RetryError):
        retry_plan.after_error(ConnectError("refused", origin=ORIGIN))


def test_no_retries_means_the_first_error_is_raised_as_is() -> None:
    error = ConnectError("refused", origin=ORIGIN)
    with pytest.raises(ConnectError) as caught:
        plan(total=0).after_error(error)
    assert caught.value is error


@pytest.mark.parametrize("error", [PoolTimeout("pool full", origin=ORIGIN, timeout=1.0),
                                   TotalTimeout("too long", origin=ORIGIN, timeout=9.0)])
def test_errors_no_retry_can_help_end_the_loop(error: TransportError) -> None:
    with pytest.raises(type(error)) as caught:
        plan(total=5).after_error(error)
    assert caught.value is error


def test_final_error_after_retries_is_wrapped() -> None:
    retry_plan = plan(total=5)
    retry_plan.after_error(ConnectError("refused", origin=ORIGIN))
    with pytest.raises(RetryError) as caught:
        retry_plan.after_error(TotalTimeout("too long", origin=ORIGIN, timeout=9.0))
    assert isinstance(caught.value.last_error, TotalTimeout)


@given(st.lists(st.sampled_from(["connect", "read"]), min_size=1, max_size=12),
       st.integers(0, 5))
def test_attempts_never_exceed_the_total_plus_one(kinds: list[str], total: int) -> None:
    retry_plan = plan(total=total)
    for kind in kinds:
        error: TransportError = (ConnectError("refused", origin=ORIGIN) if kind == "connect"
                                 else ReadError("reset", origin=ORIGIN))
        try:
            retry_plan.after_error(error)
        except (RetryError, ConnectError, ReadError):
            assert retry_plan.attempts == min(len(kinds), total + 1)
            return
    assert retry_plan.attempts == len(kinds) <= total


# -- responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 404, 500])
def test_responses_outside_the_forcelist_are_kept(status: int) -> None:
    retry_plan = plan()
    assert retry_plan.after_response(respond(status), wall_now=0.0) is None
    assert retry_plan.attempts == 0


def test_forcelisted_status_is_retried_with_backoff() -> None:
    retry_plan = plan(total=2)
    assert retry_plan.after_response(respond(503), wall_now=0.0) == 1.0
    assert retry_plan.policy.history == ("status",)
    assert retry_plan.attempts == 1


def test_status_retry_is_only_for_idempotent_replayable_requests() -> None:
    assert plan("POST").after_response(respond(503), wall_now=0.0) is None
    assert plan(streamed=True).after_response(respond(503), wall_now=0.0) is None


def test_retry_after_seconds_sets_the_delay_up_to_its_maximum() -> None:
    assert plan().after_response(respond(429, "7"), wall_now=0.0) == 7.0
    assert plan(retry_after_max=3.0).after_response(respond(429, "7"), wall_now=0.0) == 3.0


def test_retry_after_date_is_relative_to_the_wall_clock() -> None:
    response = respond(503, "Thu, 01 Jan 1970 00:01:40 GMT")  # 100 s after the epoch
    assert plan().after_response(response, wall_now=60.0) == 40.0


def test_retry_after_is_ignored_when_told_to_or_unreadable() -> None:
    assert plan(respect_retry_after=False).after_response(respond(429, "7"), 0.0) == 1.0
    assert plan().after_response(respond(429, "whenever"), 0.0) == 1.0


def test_exhausted_status_retries_raise_retry_error() -> None:
    retry_plan = plan(total=1)
    assert retry_plan.after_response(respond(503), wall_now=0.0) == 1.0
    with pytest.raises(RetryError, match="still answered 503 after 1 retries") as caught:
        retry_plan.after_response(respond(503), wall_now=0.0)
    errors = caught.value.errors
    statuses = [e.response.status_code for e in errors if isinstance(e, HTTPStatusError)]
    assert statuses == [503, 503]
    assert len(errors) == 2
    assert caught.value.origin == "http://api.example:80"


def test_exhausted_status_retries_return_the_response_when_not_raising() -> None:
    retry_plan = plan(total=1, raise_on_status=False)
    retry_plan.after_response(respond(503), wall_now=0.0)
    assert retry_plan.after_response(respond(503), wall_now=0.0) is None


def test_no_retries_at_all_keeps_the_response() -> None:
    assert plan(total=0).after_response(respond(503), wall_now=0.0) is None


# -- Retry-After values ------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [
    ("0", 0.0),
    ("120", 120.0),
    (" 7 ", 7.0),
    ("Thu, 01 Jan 1970 00:02:00 GMT", 60.0),
    ("Thu, 01 Jan 1970 00:00:30 GMT", 0.0),  # a date in the past asks for no wait
    ("Sunday, 01-Jan-70 00:02:00 GMT", 60.0),  # the obsolete RFC 850 form
])
def test_retry_after_values(value: str, seconds: float) -> None:
    assert retry_after_seconds(value, wall_now=60.0) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Thu, 99 Foo 1970",
                                   "\u00b2", "1\u00b3", "\u0661\u0662", "\uff11"])
def test_unreadable_retry_after_values(value: str | None) -> None:
    # Only ASCII digits are delta-seconds: "²" passes str.isdigit() and "١٢" even float().
    assert retry_after_seconds(value, wall_now=0.0) is None


def test_a_non_ascii_digit_retry_after_does_not_crash_the_plan() -> None:
    assert plan().after_response(respond(503, "\u00b2"), wall_now=0.0) == 1.0  # the backoff


@pytest.fixture
def far_from_gmt() -> Iterator[None]:
    """Local time 10 hours from GMT, so reading a date as local time shows."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix-only")
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "UTC-10")  # POSIX: 10 hours east of UTC
    time.tzset()
    try:
        yield
    finally:
        mp.undo()
        time.tzset()


@pytest.mark.usefixtures("far_from_gmt")
@pytest.mark.parametrize("value", [
    "Thu Jan  1 00:02:00 1970",  # asctime: no zone at all, RFC 9110 says to accept it
    "Thu, 01 Jan 1970 00:02:00 -0000",  # "-0000": no zone information
    "Thu, 01 Jan 1970 00:02:00 GMT",
])
def test_retry_after_dates_are_gmt_whatever_the_local_zone(value: str) -> None:
    assert time.localtime(0).tm_hour == 10  # the fixture took effect
    assert retry_after_seconds(value, wall_now=60.0) == 60.0
