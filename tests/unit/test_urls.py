"""URL and Origin: parsing, normalisation, validation and the parse cache."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolhttp import URL, InvalidURL, Origin
from poolhttp._urls import QueryParams, encode_params, parse_url

# -- parsing and normalisation -----------------------------------------------------------------


def test_parts_of_a_full_url() -> None:
    url = URL("https://user:pw@Example.COM:8443/a/b?x=1&y=2#top")
    assert (url.scheme, url.host, url.port) == ("https", "example.com", 8443)
    assert (url.path, url.query, url.fragment) == ("/a/b", "x=1&y=2", "top")
    assert url.userinfo == "user:pw"
    assert url.target == b"/a/b?x=1&y=2"  # the fragment never goes on the request line
    assert url.raw_path == "/a/b?x=1&y=2"
    assert str(url) == "https://user:pw@example.com:8443/a/b?x=1&y=2#top"


@pytest.mark.parametrize(("text", "expected"), [
    ("HTTP://Example.COM", "http://example.com/"),  # scheme and host lower-cased, "/" added
    ("http://h:80/", "http://h/"),  # the default port is left out
    ("https://h:443/x", "https://h/x"),
    ("http://h:443/", "http://h:443/"),  # 443 is not http's default
    ("http://h?x=1", "http://h/?x=1"),
    ("http://h/a?", "http://h/a"),  # an empty query is dropped
    ("http://h:/", "http://h/"),  # an empty port means the default
])
def test_normalised_form(text: str, expected: str) -> None:
    assert str(URL(text)) == expected


@pytest.mark.parametrize(("text", "port"), [
    ("http://h/", 80), ("https://h/", 443), ("http://h:8080/", 8080), ("https://h:80/", 80),
])
def test_port_defaults_to_the_schemes(text: str, port: int) -> None:
    assert URL(text).port == port


@pytest.mark.parametrize(("text", "target"), [
    ("http://h/a b", b"/a%20b"),
    ("http://h/a%20b", b"/a%20b"),  # an existing escape is kept, not encoded twice
    ("http://h/caf\u00e9", b"/caf%C3%A9"),
    ("http://h/p?q=a b&r=\u00fc", b"/p?q=a%20b&r=%C3%BC"),
    ("http://h/p?a=/b?c", b"/p?a=/b?c"),  # "?" and "/" are legal inside a query
    ("http://h/;x=1,y=2@z", b"/;x=1,y=2@z"),
])
def test_target_is_percent_encoded_ascii(text: str, target: bytes) -> None:
    assert URL(text).target == target


def test_international_host_is_idna_encoded() -> None:
    url = URL("http://B\u00fccher.example/")
    assert url.host == "xn--bcher-kva.example"
    assert url.origin.host_header == "xn--bcher-kva.example"


def test_ipv6_literal_is_normalised_and_unbracketed() -> None:
    url = URL("http://[0:0:0::1]:8080/")
    assert url.host == "::1"  # the form socket functions take
    assert url.origin.key == "http://[::1]:8080"
    assert str(url) == "http://[::1]:8080/"


def test_ipv4_literal() -> None:
    url = URL("http://192.0.2.1:81/")
    assert (url.host, url.port, url.origin.key) == ("192.0.2.1", 81, "http://192.0.2.1:81")


def test_userinfo_stays_out_of_the_origin() -> None:
    url = URL("http://a@b@host/")  # the last "@" separates the userinfo
    assert url.userinfo == "a@b"
    assert url.host == "host"
    assert url.origin == URL("http://host/").origin


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "example.com/path",  # no scheme
    "//example.com/",
    "ftp://example.com/",  # a scheme we do not speak
    "http:///path",  # no host
    "http://host:99999/",  # port out of range
    "http://host:0/",  # nothing listens on port 0
    "https://host:00/",
    "http://host:abc/",
    "http://host: 80/",
    "http://[::g]/",  # not an IPv6 address
    "http://[::1/",  # unclosed bracket
    "http://[192.0.2.1]/",  # IPv4 in brackets
    "http://exa mple.com/",
    "http://ex%41mple.com/",
    "http://h/a\r\nX-Injected: 1",  # header injection through the request line
    "http://h/\x00",
    "http://h\t/",
    "http://h/\x7f",
])
def test_invalid_url_raises_invalid_url_naming_it(text: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        URL(text)
    assert caught.value.url == text
    assert isinstance(caught.value, ValueError)  # `except ValueError` keeps working


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidURL, match="must be a str, not bytes"):
        URL(b"http://h/")  # type: ignore[arg-type]


# -- identity, equality, copies ----------------------------------------------------------------


def test_equality_and_hash_follow_the_normalised_string() -> None:
    url = URL("HTTP://H:80/a")
    assert url == URL("http://h/a")
    assert url == "http://h/a"
    assert hash(url) == hash(URL("http://h/a"))
    assert url != URL("http://h/b")
    assert url != 42


def test_url_from_url_is_an_equal_copy() -> None:
    original = URL("https://u@h:1/p?q#f")
    copy = URL(original)
    assert copy == original
    assert copy is not original
    assert (copy.origin, copy.target, copy.fragment, copy.userinfo) == (
        original.origin, original.target, original.fragment, original.userinfo)


def test_origins_are_shared_between_urls_of_one_origin() -> None:
    assert URL("http://h/a").origin is URL("http://H:80/b?c").origin
    assert URL("http://h/").origin != URL("https://h/").origin
    assert URL("http://h/").origin != URL("http://h:81/").origin


# -- Origin ------------------------------------------------------------------------------------


def test_origin_fields() -> None:
    origin = Origin("https", "example.com", 443)
    assert origin.key == "https://example.com:443"  # the port is always in the key
    assert origin.host_header == "example.com"
    assert origin.is_tls
    assert str(origin) == origin.key
    assert repr(origin) == "Origin('https://example.com:443')"
    assert not Origin("http", "example.com", 80).is_tls


def test_ipv6_origin_brackets_its_host() -> None:
    origin = Origin("http", "::1", 8080)
    assert origin.key == "http://[::1]:8080"
    assert origin.host_header == "[::1]:8080"
    assert origin.host == "::1"


@pytest.mark.parametrize("scheme", ["ftp", "HTTP", "", "ws"])
def test_origin_rejects_a_scheme_we_do_not_speak(scheme: str) -> None:
    with pytest.raises(InvalidURL, match=f"unsupported scheme {scheme!r} for an Origin"):
        Origin(scheme, "example.com", 21)


@pytest.mark.parametrize("port", [0, -1, 65536, True, "80", 80.0])
def test_origin_rejects_an_invalid_port(port: object) -> None:
    with pytest.raises(InvalidURL, match=r"invalid port .* for an Origin"):
        Origin("http", "example.com", port)  # type: ignore[arg-type]


def test_origin_equality_is_by_key() -> None:
    assert Origin("http", "h", 81) == Origin("http", "h", 81)
    assert hash(Origin("http", "h", 81)) == hash(Origin("http", "h", 81))
    assert Origin("http", "h", 81) != Origin("http", "h", 82)
    assert Origin("http", "h", 81) != "http://h:81"  # an Origin is not its string


# -- join and params ---------------------------------------------------------------------------


@pytest.mark.parametrize(("relative", "expected"), [
    ("users", "http://u@h:8080/api/users"),
    ("/users", "http://u@h:8080/api/users"),  # base_url semantics: the base path is kept
    ("a/b?c=d", "http://u@h:8080/api/a/b?c=d"),
    ("?x=1", "http://u@h:8080/api?x=1"),
    ("", "http://u@h:8080/api"),
    ("https://other/x", "https://other/x"),  # an absolute URL replaces the base
])
def test_join(relative: str, expected: str) -> None:
    base = URL("http://u@h:8080/api/?k=v#frag")
    assert str(base.join(relative)) == expected


def test_copy_with_params_appends_to_the_query() -> None:
    url = URL("http://h/s?k=v")
    joined = url.copy_with_params({"a": 1, "b": None, "c": [1, 2], "d": True})
    assert str(joined) == "http://h/s?k=v&a=1&c=1&c=2&d=true"
    assert str(URL("http://h/").copy_with_params([("x", "a b")])) == "http://h/?x=a+b"


@pytest.mark.parametrize(("text", "expected"), [
    ("http://h/s?k=v#frag", "http://h/s?k=v&a=1#frag"),
    ("http://h/s#frag", "http://h/s?a=1#frag"),
    ("https://u:p@[::1]:8443/a%20b?k=v#f", "https://u:p@[::1]:8443/a%20b?k=v&a=1#f"),
    ("http://h/s?k=v", "http://h/s?k=v&a=1"),
])
def test_copy_with_params_keeps_the_fragment(text: str, expected: str) -> None:
    url = URL(text).copy_with_params({"a": 1})
    assert str(url) == expected
    assert url.fragment == URL(text).fragment
    assert b"#" not in url.target  # the fragment still never goes on the request line


@pytest.mark.parametrize("empty", [None, {}, [], ""])
def test_copy_with_no_params_is_the_same_url(empty: QueryParams | None) -> None:
    url = URL("http://h/s?k=v")
    assert url.copy_with_params(empty) is url


@pytest.mark.parametrize(("params", "expected"), [
    ({"a": "x y", "b": 1.5}, "a=x+y&b=1.5"),
    ([("a", "1"), ("a", "2")], "a=1&a=2"),  # a repeated key keeps its order
    ({"t": ("p", None, "q")}, "t=p&t=q"),  # None values are dropped
    ({"f": False, "t": True}, "f=false&t=true"),
    ({"\u00e9": "&="}, "%C3%A9=%26%3D"),
    ({"empty": []}, ""),
    ("?already=encoded", "already=encoded"),
    (b"raw=bytes", "raw=bytes"),
])
def test_encode_params(params: QueryParams, expected: str) -> None:
    assert encode_params(params) == expected


@pytest.mark.parametrize("params", [b"\xff", b"q=caf\xc3\xa9"])
def test_encode_params_rejects_non_ascii_bytes(params: bytes) -> None:
    with pytest.raises(InvalidURL, match="given as bytes must be ASCII"):
        encode_params(params)
    with pytest.raises(InvalidURL):
        URL("http://h/").copy_with_params(params)


@given(st.lists(st.tuples(st.text(min_size=1), st.text())))
def test_encoded_params_decode_to_the_same_pairs(pairs: list[tuple[str, str]]) -> None:
    decoded = parse_qsl(encode_params(pairs), keep_blank_values=True)
    assert decoded == pairs


# -- the parse cache ---------------------------------------------------------------------------


def test_parse_url_returns_the_cached_url() -> None:
    first = parse_url("http://cache.example/once")
    assert parse_url("http://cache.example/once") is first
    assert first == URL("http://cache.example/once")


def test_parse_url_cache_is_bounded() -> None:
    first = parse_url("http://bounded.example/first")
    for n in range(10_000):  # far more distinct URLs than the cache may hold
        parse_url(f"http://bounded.example/{n}")
    again = parse_url("http://bounded.example/first")
    assert again is not first  # evicted, parsed anew ...
    assert again == first  # ... to the same value


def test_parse_url_does_not_cache_failures() -> None:
    for _ in range(2):
        with pytest.raises(InvalidURL):
            parse_url("nope://h/")


# -- properties --------------------------------------------------------------------------------

_LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_HOSTS = st.lists(_LABELS, min_size=1, max_size=4).map(".".join)
_PATHS = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20)


@given(scheme=st.sampled_from(["http", "https"]), host=_HOSTS,
       port=st.integers(1, 65535), path=_PATHS)
def test_normalising_is_idempotent(scheme: str, host: str, port: int, path: str) -> None:
    url = URL(f"{scheme}://{host}:{port}/{path.replace('#', '').replace('?', '')}")
    assert URL(str(url)) == url
    assert url.origin.key == f"{scheme}://{host}:{port}"
    assert url.target.isascii()
    assert b" " not in url.target


_URL_PIECES = "aZ09.-_~:/@!$&'()*+,;=%?#é "


def _parsed(parse: object, text: str) -> tuple[object, ...]:
    from poolhttp import _urls

    url = URL.__new__(URL)
    try:
        getattr(_urls, str(parse))(url, text)
    except InvalidURL as exc:
        return ("InvalidURL", str(exc))
    return tuple(getattr(url, name) for name in URL.__slots__)


@given(scheme=st.sampled_from(["http", "https", "HTTP", "ftp"]),
       host=st.text(alphabet="aZ09.-_", min_size=0, max_size=12),
       port=st.one_of(st.none(), st.sampled_from(["", "0", "1", "080", "8080", "65535", "65536",
                                                  "99999"])),
       rest=st.text(alphabet=_URL_PIECES, max_size=30))
def test_the_fast_parse_of_simple_urls_agrees_with_the_general_one(
        scheme: str, host: str, port: str | None, rest: str) -> None:
    text = f"{scheme}://{host}{'' if port is None else ':' + port}{rest}"
    assert _parsed("_parse_into", text) == _parsed("_parse_general", text)


@pytest.mark.parametrize("text", ["http://example.com", "https://Example.COM:8443/a/b?c=d&e",
                                  "http://127.0.0.1:80/x?", "http://h?q=1", "http://h:65535/"])
def test_simple_urls_take_the_fast_parse(text: str) -> None:
    from poolhttp._urls import _SIMPLE_URL

    assert _SIMPLE_URL.fullmatch(text) is not None
    assert _parsed("_parse_into", text) == _parsed("_parse_general", text)
