"""Mount patterns: parsing, matching, and the most specific match winning."""

from __future__ import annotations

import pytest

import poolhttp
from poolhttp._mounts import MountPattern, MountPatterns


@pytest.mark.parametrize(("pattern", "scheme", "host", "port", "matches"), [
    ("all://", "http", "example.com", 80, True),
    ("all://", "https", "x.org", 8443, True),
    ("https://", "https", "example.com", 443, True),
    ("https://", "http", "example.com", 80, False),
    ("http://example.com", "http", "example.com", 8080, True),
    ("http://example.com", "http", "api.example.com", 80, False),
    ("http://Example.COM.", "http", "example.com", 80, True),
    ("all://*.example.com", "https", "api.example.com", 443, True),
    ("all://*.example.com", "https", "a.b.example.com", 443, True),
    ("all://*.example.com", "https", "example.com", 443, False),
    ("all://*.example.com", "https", "badexample.com", 443, False),
    ("https://example.com:8443", "https", "example.com", 8443, True),
    ("https://example.com:8443", "https", "example.com", 443, False),
    ("all://[::1]:8080", "http", "::1", 8080, True),
    ("all://127.0.0.1", "http", "127.0.0.1", 1234, True),
])
def test_a_pattern_matches(pattern: str, scheme: str, host: str, port: int,
                           matches: bool) -> None:
    assert MountPattern.parse(pattern).matches(scheme, host, port) is matches


def test_the_most_specific_pattern_wins() -> None:
    patterns = MountPatterns({
        "all://": "all",
        "https://": "https",
        "all://*.example.com": "wildcard",
        "https://example.com": "host",
        "https://api.example.com": "longer host",
        "https://api.example.com:8443": "port",
    })
    assert patterns.match("http", "x.org", 80) == "all"
    assert patterns.match("https", "x.org", 443) == "https"
    assert patterns.match("https", "www.example.com", 443) == "wildcard"
    assert patterns.match("https", "example.com", 443) == "host"
    assert patterns.match("https", "api.example.com", 443) == "longer host"
    assert patterns.match("https", "api.example.com", 8443) == "port"
    assert MountPatterns({"https://": 1}).match("http", "x", 80) is None


@pytest.mark.parametrize(("pattern", "words"), [
    ("example.com", "write it as"),
    ("ftp://example.com", "write it as"),
    ("https://example.com/path", "not a path"),
    ("https://user@example.com", "credentials"),
    ("https://example.com:0", "port must be a number"),
    ("https://example.com:http", "port must be a number"),
    ("all://ex*ample.com", "wildcard goes only at the start"),
    ("all://[::1", "unclosed"),
])
def test_a_bad_pattern_is_refused_naming_it(pattern: str, words: str) -> None:
    with pytest.raises(poolhttp.InvalidURL) as caught:
        MountPattern.parse(pattern)
    assert words in str(caught.value)
    assert repr(pattern) in str(caught.value)


def test_mount_settings_are_checked() -> None:
    with pytest.raises(TypeError, match=r"must be a poolhttp\.Limits"):
        poolhttp.Mount(limits={"max_connections": 2})
    with pytest.raises(TypeError, match=r"http2=\.\.\.\) must be True or False"):
        poolhttp.Mount(http2="yes")
    with pytest.raises(TypeError, match="timeout must be"):
        poolhttp.Mount(timeout="5")
    assert poolhttp.Mount(retries=2).retries == poolhttp.Retry(total=2)
    assert poolhttp.Mount(timeout=5).timeout == poolhttp.Timeout(5)


def test_a_client_refuses_bad_mounts_naming_the_pattern() -> None:
    with pytest.raises(TypeError, match=r"mounts\['https://'\] must be a poolhttp.Mount"):
        poolhttp.Client(mounts={"https://": {"retries": 2}})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="mounts must be a mapping"):
        poolhttp.Client(mounts=[("https://", poolhttp.Mount())])  # type: ignore[arg-type]
    with pytest.raises(poolhttp.InvalidURL, match="'nope'"):
        poolhttp.AsyncClient(mounts={"nope": poolhttp.Mount()})
    with pytest.raises(poolhttp.InvalidURL):
        poolhttp.Client(mounts={"https://": poolhttp.Mount(proxy="ftp://x")})
    with pytest.raises(ValueError, match="mounts= cannot route"):
        poolhttp.Client(uds="/tmp/x.sock", mounts={"https://": poolhttp.Mount()})


def test_mount_repr_shows_what_is_set() -> None:
    assert repr(poolhttp.Mount(http2=True, proxy=None)) == "Mount(proxy=None, http2=True)"
    assert "hunter2" not in repr(poolhttp.Mount(proxy="http://u:hunter2@p:3128"))
    assert repr(poolhttp.Mount(cert=("c.pem", "k.pem", "hunter2"))) == (
        "Mount(cert=('c.pem', 'k.pem', '[secure]'))")
