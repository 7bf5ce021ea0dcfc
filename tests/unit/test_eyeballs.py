"""RFC 8305 ordering and staggering, without I/O (poolhttp._core.eyeballs)."""

from __future__ import annotations

from socket import AF_INET, AF_INET6

import pytest

from poolhttp._core.dns import Address
from poolhttp._core.eyeballs import Stagger, interleave


def v6(n: int) -> Address:
    return (AF_INET6, (f"2001:db8::{n}", 443, 0, 0))


def v4(n: int) -> Address:
    return (AF_INET, (f"192.0.2.{n}", 443))


@pytest.mark.parametrize(("given", "expected"), [
    pytest.param([v6(1), v6(2), v4(1), v4(2)], [v6(1), v4(1), v6(2), v4(2)], id="v6-first"),
    pytest.param([v4(1), v4(2), v6(1), v6(2)], [v4(1), v6(1), v4(2), v6(2)], id="v4-first"),
    pytest.param([v6(1), v4(1), v4(2), v4(3)], [v6(1), v4(1), v4(2), v4(3)],
                 id="one-v6-then-the-rest-of-v4"),
    pytest.param([v4(1), v6(1), v6(2), v6(3), v4(2)], [v4(1), v6(1), v4(2), v6(2), v6(3)],
                 id="mixed-order-kept-within-each-family"),
    pytest.param([v4(3), v4(1), v4(2)], [v4(3), v4(1), v4(2)], id="v4-only"),
    pytest.param([v6(2), v6(1)], [v6(2), v6(1)], id="v6-only"),
    pytest.param([v4(1)], [v4(1)], id="one"),
    pytest.param([], [], id="empty"),
])
def test_interleave(given: list[Address], expected: list[Address]) -> None:
    assert interleave(given) == expected


def test_interleave_returns_a_new_list_and_keeps_every_address() -> None:
    given = [v6(1), v6(2), v6(3), v4(1)]
    result = interleave(given)
    assert result is not given
    assert sorted(result) == sorted(given)
    assert given == [v6(1), v6(2), v6(3), v4(1)]  # the input is left alone


def test_interleave_takes_any_iterable() -> None:
    assert interleave(iter([v6(1), v6(2), v4(1)])) == [v6(1), v4(1), v6(2)]


def test_stagger_spaces_attempts_by_the_delay() -> None:
    stagger = Stagger(0.25)
    assert stagger.is_due(100.0)  # the first attempt starts at once
    stagger.started(100.0)
    assert not stagger.is_due(100.2499)
    assert stagger.is_due(100.25)
    stagger.started(100.25)
    assert not stagger.is_due(100.4)
    assert stagger.is_due(100.5)


def test_stagger_brings_the_next_attempt_forward_when_the_latest_fails() -> None:
    stagger = Stagger(10.0)
    first = stagger.started(0.0)
    stagger.failed(first)
    assert stagger.is_due(0.001)
    second = stagger.started(0.001)
    third = stagger.started(10.001)
    stagger.failed(second)  # an earlier attempt failing leaves the latest its full delay
    assert not stagger.is_due(10.002)
    stagger.failed(third)
    assert stagger.is_due(10.002)


def test_stagger_wake_is_the_sooner_of_next_attempt_and_deadline() -> None:
    stagger = Stagger(1.0)
    stagger.started(5.0)
    assert stagger.wake(None, more=True) == 6.0
    assert stagger.wake(7.0, more=True) == 6.0
    assert stagger.wake(5.5, more=True) == 5.5
    assert stagger.wake(7.0, more=False) == 7.0  # no address left: only the deadline
    assert stagger.wake(None, more=False) is None  # nothing but an attempt ending
