"""The core's rule for moving slots between pool keys: no churn, no starvation.

A small simulated driver keeps a fixed number of requests in flight over several keys and
finishes connects and requests in an order hypothesis picks. Counting the `Open` actions is
counting what a server would accept.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from poolhttp import Limits
from poolhttp._core.pool import Action, Assign, Close, Conn, Fail, Open, PoolKey, PoolState, Ticket

KEYS = [PoolKey(f"http://{name}:80") for name in "abcdefgh"]


class Simulation:
    def __init__(self, limits: Limits) -> None:
        self.pool = PoolState(limits)
        self.opened = 0
        self.connecting: list[Conn] = []
        self.running: list[Conn] = []
        self.served = 0
        self.assigned: list[Ticket] = []

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Open):
                self.opened += 1
                self.connecting.append(action.conn)
            elif isinstance(action, Assign):
                self.running.append(action.conn)
                self.assigned.append(action.ticket)
            elif isinstance(action, Close):
                if action.conn in self.connecting:
                    self.connecting.remove(action.conn)
            else:
                assert isinstance(action, Fail)
                raise AssertionError(f"unexpected failure {action.error}")
        self.pool.check_invariants()

    def submit(self, key: PoolKey) -> Ticket:
        conn = self.pool.checkout(key, 0.0)
        ticket = Ticket(key)
        if conn is not None:
            self.running.append(conn)
            return ticket
        self.apply(self.pool.request(ticket, 0.0))
        if ticket.conn is not None:
            self.running.append(ticket.conn)
        return ticket

    def step(self, rng: random.Random) -> None:
        """Finish one connect or one request, picked at random."""
        events = len(self.connecting) + len(self.running)
        assert events, "nothing in flight: the pool lost a request"
        pick = rng.randrange(events)
        if pick < len(self.connecting):
            self.apply(self.pool.connected(self.connecting.pop(pick), 0.0))
            return
        conn = self.running.pop(pick - len(self.connecting))
        self.served += 1
        self.apply(self.pool.released(conn, True, 0.0))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n_keys=st.integers(2, 4), max_conn=st.integers(8, 24),
       extra=st.integers(1, 5))
def test_round_robin_above_the_limit_opens_at_most_twice_the_limit(
        seed: int, n_keys: int, max_conn: int, extra: int) -> None:
    """Round-robin over a few keys, with `extra` times the limit in flight: the pool opens
    no more than 2 x max_connections in all, and every request is served."""
    rng = random.Random(seed)
    sim = Simulation(Limits(max_connections=max_conn))
    total = 40 * max_conn
    in_flight = min(total, extra * max_conn + 1)
    submitted = 0
    for _ in range(in_flight):
        sim.submit(KEYS[submitted % n_keys])
        submitted += 1
    while sim.served < total:
        before = sim.served
        sim.step(rng)
        if sim.served > before and submitted < total:
            sim.submit(KEYS[submitted % n_keys])
            submitted += 1
    assert sim.opened <= 2 * max_conn, f"{sim.opened} connections for {total} requests"
    stats = sim.pool.stats()
    assert stats.created + stats.reused - total <= max_conn  # opened, never carried one


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), max_conn=st.integers(1, 20))
def test_a_key_with_no_connection_gets_the_next_freed_one(seed: int, max_conn: int) -> None:
    """Key a has a deep queue behind every slot; a request to key b arriving later is given
    a connection after one of a's requests ends, not after a's whole queue."""
    rng = random.Random(seed)
    sim = Simulation(Limits(max_connections=max_conn))
    a, b = KEYS[0], KEYS[1]
    for _ in range(10 * max_conn):
        sim.submit(a)
    while sim.connecting:
        sim.step(rng)
    late = sim.submit(b)
    releases = 0
    while not any(conn.key is b for conn in sim.connecting):  # a connect started for it
        before = sim.served
        sim.step(rng)
        releases += sim.served - before
        assert releases <= 1, "the late request waited for more than one release"
    while late.conn is None:
        sim.step(rng)
    assert late.conn.key is b


def test_more_busy_keys_than_connections_take_turns() -> None:
    """With fewer slots than busy keys no key can keep one: each waits its turn, and the
    turns go round (none is left behind)."""
    rng = random.Random(7)
    sim = Simulation(Limits(max_connections=2))
    for i in range(30):
        sim.submit(KEYS[i % 3])
    while sim.served < 30:
        sim.step(rng)
    per_key = sim.pool.stats().per_host
    assert {label: s.created for label, s in per_key.items()}.keys() == {
        str(k) for k in KEYS[:3]}
    assert all(s.created >= 1 for s in per_key.values())
