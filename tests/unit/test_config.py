"""Limits, Timeout and Retry: frozen value objects that reject bad settings when built."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolhttp import Limits, Retry, Timeout

# -- Limits ------------------------------------------------------------------------------------


def test_limits_defaults() -> None:
    limits = Limits()
    assert limits.max_connections == 100
    assert limits.max_connections_per_host is None
    assert limits.max_keepalive_connections == 100  # follows max_connections
    assert limits.keepalive_limit == 100
    assert limits.keepalive_expiry == 15.0


def test_keepalive_connections_follow_max_connections_unless_given() -> None:
    assert Limits(max_connections=7).keepalive_limit == 7
    assert Limits(max_connections=7, max_keepalive_connections=3).keepalive_limit == 3
    assert Limits(max_keepalive_connections=0).keepalive_limit == 0  # no keep-alive at all


def test_keepalive_expiry_becomes_a_float() -> None:
    expiry = Limits(keepalive_expiry=2).keepalive_expiry
    assert expiry == 2.0
    assert isinstance(expiry, float)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_connections": 0}, "max_connections must be >= 1, got 0"),
    ({"max_connections_per_host": 0}, "max_connections_per_host must be >= 1"),
    ({"max_keepalive_connections": -1}, "max_keepalive_connections must be >= 0"),
    ({"keepalive_expiry": -0.5}, "keepalive_expiry must be a number of seconds >= 0"),
    ({"keepalive_expiry": math.nan}, "keepalive_expiry must be a number of seconds >= 0"),
])
def test_limits_reject_out_of_range_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_connections": True}, "max_connections must be an int, not bool"),
    ({"max_connections": 10.0}, "max_connections must be an int, not float"),
    ({"max_connections": None}, "max_connections must be an int, not NoneType"),
    ({"max_connections_per_host": "2"}, "max_connections_per_host must be an int, not str"),
    ({"keepalive_expiry": None}, "keepalive_expiry must be a number of seconds, not None"),
    ({"keepalive_expiry": "5"}, "keepalive_expiry must be a number of seconds, not str"),
])
def test_limits_reject_wrong_types(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


def test_limits_are_frozen_values() -> None:
    limits = Limits(max_connections=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_connections = 6  # type: ignore[misc]
    assert limits == Limits(max_connections=5, max_keepalive_connections=5)
    assert hash(limits) == hash(Limits(max_connections=5))
    assert limits != Limits(max_connections=6)


def test_replace_validates_again() -> None:
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        dataclasses.replace(Limits(), max_connections=0)


# -- Timeout -----------------------------------------------------------------------------------


def test_timeout_defaults() -> None:
    timeout = Timeout()
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (10.0, 30.0, 30.0, 30.0)
    assert timeout.total is None


def test_positional_value_sets_every_phase_not_given() -> None:
    timeout = Timeout(5, pool=0.5, connect=None)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (None, 5.0, 5.0, 0.5)
    assert timeout.total is None  # total is never set by the positional value


def test_none_means_no_limit() -> None:
    timeout = Timeout(None)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (None,) * 4
    assert Timeout(read=None).connect == 10.0  # a keyword None leaves the others at default


def test_total_is_checked_too() -> None:
    assert Timeout(total=60).total == 60.0
    with pytest.raises(ValueError, match=r"Timeout\.total"):
        Timeout(total=-1)


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan])
def test_timeout_rejects_negative_and_nan(bad: float) -> None:
    with pytest.raises(ValueError, match=r"Timeout\.connect must be a number of seconds >= 0"):
        Timeout(bad)
    with pytest.raises(ValueError, match=r"Timeout\.read must be a number of seconds >= 0"):
        Timeout(read=bad)


@pytest.mark.parametrize("bad", ["5", True, [5]])
def test_timeout_rejects_non_numbers(bad: object) -> None:
    with pytest.raises(TypeError, match=r"Timeout\.write must be a number of seconds"):
        Timeout(write=bad)  # type: ignore[arg-type]


def test_timeout_coerce() -> None:
    timeout = Timeout(3.0)
    assert Timeout.coerce(timeout) is timeout
    assert Timeout.coerce(2) == Timeout(2.0)
    assert Timeout.coerce(None) == Timeout(None)


@pytest.mark.parametrize("bad", ["2", True, object()])
def test_timeout_coerce_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError, match="timeout must be a Timeout, a number of seconds or None"):
        Timeout.coerce(bad)  # type: ignore[arg-type]


def test_timeout_is_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeout().read = 1.0  # type: ignore[misc]
    assert Timeout(5.0) == Timeout(connect=5.0, read=5.0, write=5.0, pool=5.0)
    assert hash(Timeout()) == hash(Timeout())


@given(st.one_of(st.none(), st.floats(min_value=0, allow_nan=False)))
def test_timeout_keeps_any_valid_value(seconds: float | None) -> None:
    timeout = Timeout(seconds)
    assert timeout.read == seconds
    assert Timeout.coerce(seconds) == timeout


# -- Retry: construction -----------------------------------------------------------------------


def test_retry_defaults() -> None:
    retry = Retry()
    assert retry.total == 3
    assert retry.history == ()
    assert retry.status_forcelist == frozenset({429, 502, 503, 504})
    assert "GET" in retry.allowed_methods
    assert "POST" not in retry.allowed_methods


def test_retry_normalises_collections() -> None:
    methods: object = ["get", "Put"]  # any iterable of names is accepted, not only a frozenset
    retry = Retry(allowed_methods=methods, status_forcelist=[500, 500])  # type: ignore[arg-type]
    assert retry.allowed_methods == frozenset({"GET", "PUT"})
    assert retry.status_forcelist == frozenset({500})


@pytest.mark.parametrize("methods", ["POST", "get"])
def test_retry_allowed_methods_may_not_be_a_single_str(methods: str) -> None:
    # Iterating "POST" would silently allow the methods "P", "O", "S" and "T".
    with pytest.raises(TypeError, match=f"not a str: write allowed_methods={{{methods!r}}}"):
        Retry(allowed_methods=methods)  # type: ignore[arg-type]


@pytest.mark.parametrize(("methods", "message"), [
    (b"POST", "a collection of method names, not bytes"),
    (5, "a collection of method names, not int"),
    ([b"GET"], r"must hold str method names, not bytes \(b'GET'\)"),
    (["GET", None], "must hold str method names, not NoneType"),
])
def test_retry_allowed_methods_must_be_names(methods: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Retry(allowed_methods=methods)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["total", "connect", "read", "status"])
def test_retry_counts_must_be_non_negative_ints(name: str) -> None:
    with pytest.raises(ValueError, match=rf"Retry\.{name} must be >= 0, got -1"):
        Retry(**{name: -1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"Retry\.{name} must be an int, not bool"):
        Retry(**{name: True})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["backoff_factor", "backoff_max", "jitter", "retry_after_max"])
def test_retry_durations_must_be_valid_seconds(name: str) -> None:
    with pytest.raises(ValueError, match=rf"Retry\.{name} must be a number of seconds >= 0"):
        Retry(**{name: -1.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=rf"Retry\.{name} must be a number of seconds, not None"):
        Retry(**{name: None})  # type: ignore[arg-type]


def test_retry_coerce() -> None:
    retry = Retry(total=9)
    assert Retry.coerce(retry) is retry
    assert Retry.coerce(2) == Retry(total=2)
    assert Retry.coerce(None).total == 0


@pytest.mark.parametrize(("bad", "error"), [(True, TypeError), ("3", TypeError),
                                            (1.5, TypeError), (-1, ValueError)])
def test_retry_coerce_rejects_bad_values(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        Retry.coerce(bad)  # type: ignore[arg-type]


# -- Retry: using it up ------------------------------------------------------------------------


def test_increment_returns_a_new_policy() -> None:
    retry = Retry(total=3, read=2)
    used = retry.increment("read")
    assert (used.total, used.read, used.connect, used.history) == (2, 1, None, ("read",))
    assert (retry.total, retry.read, retry.history) == (3, 2, ())  # unchanged


def test_increment_without_a_total_counts_only_the_kind() -> None:
    used = Retry(total=None, connect=1).increment("connect").increment("status")
    assert (used.total, used.connect, used.status) == (None, 0, None)
    assert used.history == ("connect", "status")


def test_increment_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown retry kind 'redirect'; the kinds are "
                                         "'connect', 'read', 'status'"):
        Retry().increment("redirect")


def test_allows_rejects_an_unknown_kind_the_same_way() -> None:
    with pytest.raises(ValueError, match="unknown retry kind 'bogus'; the kinds are "
                                         "'connect', 'read', 'status'"):
        Retry().allows("bogus")


@pytest.mark.parametrize(("retry", "kind", "message"), [
    (Retry(total=0), "read", r"no read retry left in this policy \(total=0\); "
                             r"check allows\('read'\) first"),
    (Retry(total=1).increment("connect"), "status", r"no status retry left .*\(total=0\)"),
    (Retry(total=5, connect=0), "connect", r"no connect retry left .*\(connect=0\)"),
    (Retry(total=None, read=1).increment("read"), "read", r"\(read=0\)"),
])
def test_increment_of_a_used_up_policy_says_so(retry: Retry, kind: str, message: str) -> None:
    assert not retry.allows(kind)
    with pytest.raises(ValueError, match=message):
        retry.increment(kind)


def test_allows_checks_total_and_kind() -> None:
    assert Retry(total=1).allows("read")
    assert not Retry(total=0).allows("read")
    assert not Retry(total=5, read=0).allows("read")
    assert Retry(total=5, read=0).allows("connect")
    assert Retry(total=None, connect=None).allows("connect")  # nothing limits it
    assert not Retry(total=2, status=5).increment("read").increment("read").allows("status")


@given(total=st.integers(0, 6), kinds=st.lists(st.sampled_from(["connect", "read", "status"])))
def test_total_bounds_retries_of_every_kind(total: int, kinds: list[str]) -> None:
    retry = Retry(total=total)
    used = 0
    for kind in kinds:
        if not retry.allows(kind):
            break
        retry = retry.increment(kind)
        used += 1
    assert used == min(total, len(kinds))
    assert len(retry.history) == used


def test_is_retryable_method() -> None:
    retry = Retry()
    assert retry.is_retryable_method("GET", has_idempotency_key=False)
    assert not retry.is_retryable_method("POST", has_idempotency_key=False)
    assert retry.is_retryable_method("POST", has_idempotency_key=True)
    assert Retry(allowed_methods=frozenset({"post"})).is_retryable_method("POST", False)


# -- Retry: backoff ----------------------------------------------------------------------------


def test_no_wait_before_any_retry_was_used() -> None:
    assert Retry(backoff_factor=5.0).backoff(0.9) == 0.0


def test_backoff_doubles_up_to_the_maximum() -> None:
    retry = Retry(total=None, backoff_factor=1.0, backoff_max=5.0, jitter=0.0)
    delays = []
    for _ in range(5):
        retry = retry.increment("read")
        delays.append(retry.backoff(0.0))
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_adds_its_fraction() -> None:
    retry = Retry(backoff_factor=0.5, jitter=2.0).increment("connect")
    assert retry.backoff(0.0) == 0.5
    assert retry.backoff(0.25) == 1.0


@given(retries=st.integers(1, 40), factor=st.floats(0, 10), maximum=st.floats(0, 60),
       jitter=st.floats(0, 5), fraction=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_bounds(retries: int, factor: float, maximum: float, jitter: float,
                                     fraction: float) -> None:
    retry = Retry(total=None, backoff_factor=factor, backoff_max=maximum, jitter=jitter)
    for _ in range(retries):
        retry = retry.increment("read")
    delay = retry.backoff(fraction)
    assert 0.0 <= delay <= maximum + jitter
