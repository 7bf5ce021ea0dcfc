"""URL.resolve: RFC 3986 section 5.4's reference resolution examples, and what redirects need."""

from __future__ import annotations

import pytest

import poolhttp
from poolhttp import URL

BASE = URL("http://a/b/c/d;p?q")

# RFC 3986 section 5.4.1 (normal) and 5.4.2 (abnormal) examples; "http:g" takes the
# backward-compatible reading the RFC allows for a scheme equal to the base's.
EXAMPLES = {
    "g": "http://a/b/c/g", "./g": "http://a/b/c/g", "g/": "http://a/b/c/g/", "/g": "http://a/g",
    "//g": "http://g/", "?y": "http://a/b/c/d;p?y", "g?y": "http://a/b/c/g?y",
    "#s": "http://a/b/c/d;p?q#s", "g#s": "http://a/b/c/g#s", "g?y#s": "http://a/b/c/g?y#s",
    ";x": "http://a/b/c/;x", "g;x": "http://a/b/c/g;x", "": "http://a/b/c/d;p?q",
    ".": "http://a/b/c/", "./": "http://a/b/c/", "..": "http://a/b/", "../": "http://a/b/",
    "../g": "http://a/b/g", "../..": "http://a/", "../../": "http://a/", "../../g": "http://a/g",
    "../../../g": "http://a/g", "../../../../g": "http://a/g", "/./g": "http://a/g",
    "/../g": "http://a/g", "g.": "http://a/b/c/g.", ".g": "http://a/b/c/.g",
    "g..": "http://a/b/c/g..", "..g": "http://a/b/c/..g", "./../g": "http://a/b/g",
    "./g/.": "http://a/b/c/g/", "g/./h": "http://a/b/c/g/h", "g/../h": "http://a/b/c/h",
    "g;x=1/./y": "http://a/b/c/g;x=1/y", "g;x=1/../y": "http://a/b/c/y",
    "g?y/./x": "http://a/b/c/g?y/./x", "g?y/../x": "http://a/b/c/g?y/../x",
    "g#s/./x": "http://a/b/c/g#s/./x", "g#s/../x": "http://a/b/c/g#s/../x",
    "http:g": "http://a/b/c/g",
}


@pytest.mark.parametrize(("reference", "expected"), EXAMPLES.items())
def test_rfc_3986_examples(reference: str, expected: str) -> None:
    assert str(BASE.resolve(reference)) == expected


def test_absolute_and_network_path_references() -> None:
    assert str(URL("https://a/b").resolve("//h:8080/x")) == "https://h:8080/x"
    assert str(URL("https://a/b").resolve("http://other/y?z")) == "http://other/y?z"


def test_another_scheme_is_refused_by_name() -> None:
    with pytest.raises(poolhttp.InvalidURL, match="unsupported URL scheme 'mailto'"):
        URL("http://a/b").resolve("mailto:x@y")


@pytest.mark.parametrize("text", ["http://ada:s3cret@host:0/x", "http://ada:s3cret@/x",
                                  "ftp://ada:s3cret@h/", "http://ada:s3cret@ho st/"])
def test_errors_never_quote_a_password(text: str) -> None:
    with pytest.raises(poolhttp.InvalidURL) as info:
        URL(text)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in str(info.value.url)
    assert "ada:[secure]@" in str(info.value)


def test_repr_and_format_hide_the_password_str_keeps_it() -> None:
    url = URL("https://ada:s3cret@example.com/x")
    assert "s3cret" not in repr(url)
    assert "s3cret" not in f"{url}"
    assert str(url) == "https://ada:s3cret@example.com/x"


@pytest.mark.parametrize(("text", "message"), [
    ("mailto:x@y", "unsupported URL scheme 'mailto'"),
    ("javascript:alert(1)", "unsupported URL scheme 'javascript'"),
    ("example.com:8080/x", "URL has no scheme"),  # a host and port, not a scheme
    ("localhost/x", "URL has no scheme"),
])
def test_an_other_scheme_is_named_and_host_port_is_not_taken_for_one(text: str,
                                                                   message: str) -> None:
    with pytest.raises(poolhttp.InvalidURL, match=message):
        URL(text)
