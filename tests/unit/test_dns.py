"""The DNS cache (TTL, bounded; the clock passed in) and IP literals that skip the resolver."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolhttp._core.dns import Address, DnsCache, literal_address

KEY = ("api.example", 443, socket.AF_UNSPEC)
ANSWER: list[Address] = [(socket.AF_INET, ("192.0.2.10", 443)),
                         (socket.AF_INET6, ("2001:db8::10", 443, 0, 0))]


# -- literal_address ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", [socket.AF_UNSPEC, socket.AF_INET])
def test_ipv4_literal(family: int) -> None:
    assert literal_address("192.0.2.1", 8080, family) == [(socket.AF_INET, ("192.0.2.1", 8080))]


@pytest.mark.parametrize("family", [socket.AF_UNSPEC, socket.AF_INET6])
def test_ipv6_literal(family: int) -> None:
    assert literal_address("2001:db8::1", 80, family) == [
        (socket.AF_INET6, ("2001:db8::1", 80, 0, 0))]


def test_families_are_the_platforms_own() -> None:
    [(v4_family, _)] = literal_address("127.0.0.1", 80, socket.AF_UNSPEC) or []
    [(v6_family, _)] = literal_address("::1", 80, socket.AF_UNSPEC) or []
    assert (v4_family, v6_family) == (socket.AF_INET, socket.AF_INET6)


@pytest.mark.parametrize(("host", "family"), [
    ("192.0.2.1", socket.AF_INET6),
    ("::1", socket.AF_INET),
    ("::ffff:192.0.2.1", socket.AF_INET),  # an IPv4-mapped address is still IPv6
    ("192.0.2.1", -1),  # a family we do not know matches nothing
])
def test_literal_of_another_family_gives_no_address(host: str, family: int) -> None:
    assert literal_address(host, 80, family) == []


def test_zone_index_is_kept_in_the_host() -> None:
    assert literal_address("fe80::1%eth0", 80, socket.AF_UNSPEC) == [
        (socket.AF_INET6, ("fe80::1%eth0", 80, 0, 0))]


@pytest.mark.parametrize("host", ["example.com", "localhost", "", "127.1", "1.2.3.4.5", "::g",
                                  "[::1]"])
def test_names_are_left_to_the_resolver(host: str) -> None:
    assert literal_address(host, 80, socket.AF_UNSPEC) is None


@given(st.ip_addresses(), st.integers(0, 65535))
def test_every_ip_literal_is_answered(ip: IPv4Address | IPv6Address, port: int) -> None:
    host = str(ip)
    answer = literal_address(host, port, socket.AF_UNSPEC)
    assert answer is not None
    [(family, sockaddr)] = answer
    assert sockaddr[:2] == (host, port)
    assert family == (socket.AF_INET6 if ":" in host else socket.AF_INET)


# -- DnsCache: TTL -----------------------------------------------------------------------------


def test_answer_is_served_until_it_expires() -> None:
    cache = DnsCache(ttl=30.0)
    assert cache.get(KEY, now=0.0) is None
    cache.put(KEY, ANSWER, now=100.0)
    assert cache.get(KEY, now=100.0) == ANSWER
    assert cache.get(KEY, now=129.999) == ANSWER
    assert cache.get(KEY, now=130.0) is None  # the TTL is a half-open interval


def test_expired_entry_is_dropped() -> None:
    cache = DnsCache(ttl=1.0)
    cache.put(KEY, ANSWER, now=0.0)
    assert len(cache) == 1
    assert cache.get(KEY, now=5.0) is None
    assert len(cache) == 0
    assert cache.get(KEY, now=0.5) is None  # gone for good, even for an earlier clock


def test_put_again_renews_the_ttl() -> None:
    cache = DnsCache(ttl=10.0)
    cache.put(KEY, ANSWER, now=0.0)
    newer: list[Address] = [(socket.AF_INET, ("192.0.2.99", 443))]
    cache.put(KEY, newer, now=8.0)
    assert cache.get(KEY, now=15.0) == newer
    assert len(cache) == 1


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_no_ttl_caches_nothing_but_counts_the_lookup(ttl: float) -> None:
    cache = DnsCache(ttl=ttl)
    cache.put(KEY, ANSWER, now=0.0)
    assert cache.get(KEY, now=0.0) is None
    assert len(cache) == 0
    assert cache.lookups == 1


def test_empty_answer_is_not_cached() -> None:
    cache = DnsCache(ttl=30.0)
    cache.put(KEY, [], now=0.0)
    assert cache.get(KEY, now=0.0) is None  # the next request asks the resolver again
    assert cache.lookups == 1


def test_keys_differ_by_port_and_family() -> None:
    cache = DnsCache(ttl=30.0)
    cache.put(KEY, ANSWER, now=0.0)
    assert cache.get(("api.example", 80, socket.AF_UNSPEC), now=0.0) is None
    assert cache.get(("api.example", 443, socket.AF_INET), now=0.0) is None
    assert cache.get(KEY, now=0.0) == ANSWER


def test_lookups_count_every_put() -> None:
    cache = DnsCache(ttl=30.0)
    for n in range(3):
        cache.put((f"host{n}", 80, socket.AF_UNSPEC), ANSWER, now=0.0)
    assert cache.lookups == 3


# -- DnsCache: the bound -----------------------------------------------------------------------


def test_oldest_answer_is_evicted_beyond_max_entries() -> None:
    cache = DnsCache(ttl=60.0, max_entries=2)
    keys = [(f"host{n}", 80, socket.AF_UNSPEC) for n in range(3)]
    for n, key in enumerate(keys):
        cache.put(key, ANSWER, now=float(n))
    assert len(cache) == 2
    assert cache.get(keys[0], now=3.0) is None
    assert cache.get(keys[1], now=3.0) == ANSWER
    assert cache.get(keys[2], now=3.0) == ANSWER


def test_put_again_makes_an_entry_the_newest() -> None:
    cache = DnsCache(ttl=60.0, max_entries=2)
    first, second, third = ((f"host{n}", 80, socket.AF_UNSPEC) for n in range(3))
    cache.put(first, ANSWER, now=0.0)
    cache.put(second, ANSWER, now=0.0)
    cache.put(first, ANSWER, now=1.0)
    cache.put(third, ANSWER, now=2.0)
    assert cache.get(first, now=3.0) == ANSWER
    assert cache.get(second, now=3.0) is None


_OPS = st.lists(st.tuples(st.sampled_from(["put", "get"]), st.integers(0, 5),
                          st.floats(0, 20)), max_size=40)


@given(ops=_OPS, ttl=st.floats(0.5, 10), max_entries=st.integers(1, 8))
def test_cache_never_serves_stale_or_foreign_answers(
        ops: list[tuple[str, int, float]], ttl: float, max_entries: int) -> None:
    cache = DnsCache(ttl=ttl, max_entries=max_entries)
    now = 0.0
    last_put: dict[int, tuple[float, list[Address]]] = {}
    for op, host, step in ops:
        now += step
        key = (f"host{host}", 80, socket.AF_UNSPEC)
        if op == "put":
            answer: list[Address] = [(socket.AF_INET, (f"192.0.2.{host}", 80))]
            cache.put(key, answer, now)
            last_put[host] = (now, answer)
            continue
        served = cache.get(key, now)
        if served is not None:
            put_at, answer = last_put[host]
            assert served == answer  # the latest answer for this very key
            assert now < put_at + ttl
        elif host in last_put and max_entries >= 6:  # room for all six hosts: only expiry
            assert now >= last_put[host][0] + ttl
        assert len(cache) <= max_entries
