"""Happy eyeballs (RFC 8305), without I/O: the order of the addresses and when to try each.

Theory of operation. A name often resolves to addresses of two families, and one family may
be broken on the path (an IPv6 route that drops packets): its connects neither succeed nor
fail, they hang until a time-out. Trying the addresses one after the other then costs a
whole connect time-out per dead address. Instead:

- `interleave` alternates the families (section 4), so a broken family costs one attempt
  before the other family gets its turn, not one attempt per address of it;
- attempts start `delay` seconds apart, each while the earlier ones still run (section 5):
  the first to connect wins and the others are cancelled;
- the next attempt starts at once, before its `delay`, when the latest one has failed: a
  refusal says nothing about the others and there is no reason to wait for it.

`Stagger` keeps that schedule; the drivers (`_async/dial.py`, `_sync/dial.py`) do the
waiting and the connecting, and the `ConnectPlan` still hands out the addresses, records
failures and rules on the deadline. Times are whatever clock the driver passes as `now`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .dns import Address

__all__ = ["Stagger", "interleave"]

_AT_ONCE = float("-inf")


def interleave(addresses: Iterable[Address]) -> list[Address]:
    """The addresses reordered as RFC 8305 section 4 says: the families alternate, starting
    with the family of the first address; within a family the order is kept.

    >>> from socket import AF_INET, AF_INET6
    >>> v6a, v6b = (AF_INET6, ("::1", 80, 0, 0)), (AF_INET6, ("::2", 80, 0, 0))
    >>> v4a, v4b = (AF_INET, ("192.0.2.1", 80)), (AF_INET, ("192.0.2.2", 80))
    >>> interleave([v6a, v6b, v4a, v4b]) == [v6a, v4a, v6b, v4b]
    True
    >>> interleave([v4a, v6a, v6b]) == [v4a, v6a, v6b]
    True
    """
    # A dict keeps the order in which families first appear, so the first address's family
    # leads every round.
    by_family: dict[int, list[Address]] = {}
    for address in addresses:
        by_family.setdefault(address[0], []).append(address)
    if len(by_family) < 2:
        return next(iter(by_family.values()), [])
    families = list(by_family.values())
    rounds = max(len(family) for family in families)
    return [family[i] for i in range(rounds) for family in families if i < len(family)]


class Stagger:
    """When the next connect attempt is due: `delay` after the latest one started, or at
    once when that one has failed (or none has started yet).

    >>> stagger = Stagger(0.25)
    >>> stagger.is_due(10.0)
    True
    >>> first = stagger.started(10.0)
    >>> stagger.is_due(10.1), stagger.wake(None, more=True)
    (False, 10.25)
    >>> stagger.wake(10.2, more=True), stagger.wake(20.0, more=False)
    (10.2, 20.0)
    >>> second = stagger.started(10.25)
    >>> stagger.failed(first)           # not the latest: the schedule stands
    >>> stagger.is_due(10.3)
    False
    >>> stagger.failed(second)          # the latest failed: the next one may start now
    >>> stagger.is_due(10.3)
    True
    """

    __slots__ = ("_due", "_latest", "delay")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._due = _AT_ONCE
        self._latest = 0  # the number of the latest attempt; 0: none yet

    def started(self, now: float) -> int:
        """An attempt started at `now`; returns its number, for `failed`."""
        self._latest += 1
        self._due = now + self.delay
        return self._latest

    def failed(self, attempt: int) -> None:
        """Attempt number `attempt` failed. Only the latest one's failure brings the next
        attempt forward: an earlier one failing leaves the latest its full `delay`."""
        if attempt == self._latest:
            self._due = _AT_ONCE

    def is_due(self, now: float) -> bool:
        """Whether the next attempt may start at `now`."""
        return now >= self._due

    def wake(self, end: float | None, more: bool) -> float | None:
        """When the driver must next look up from its wait, if no attempt ends before: when
        the next attempt is due (if `more` addresses are left) or at `end` (the plan's
        deadline), whichever comes first; None: only an attempt ending can wake it."""
        due = self._due if more else None
        if due is None or (end is not None and end < due):
            return end
        return due
