"""Headers: case-insensitive, multi-valued, bytes kept as given, validated on the way in."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolhttp import Headers, InvalidRequest, Request, Response
from poolhttp._headers import HeaderTypes, encode_header_pairs
from poolhttp.cli._outputs import headers_json


def sample() -> Headers:
    return Headers([("Set-Cookie", "a=1"), ("Content-Type", "text/html"), ("set-cookie", "b=2")])


# -- reading -----------------------------------------------------------------------------------


def test_lookup_ignores_case_and_joins_repeats() -> None:
    headers = sample()
    assert headers["CONTENT-TYPE"] == "text/html"
    assert headers["set-cookie"] == "a=1, b=2"
    assert headers.get_list("Set-Cookie") == ["a=1", "b=2"]


def test_missing_header() -> None:
    headers = sample()
    with pytest.raises(KeyError):
        headers["x-missing"]
    assert headers.get("x-missing") is None
    assert headers.get("x-missing", "fallback") == "fallback"
    assert headers.get_list("x-missing") == []


def test_names_are_lower_cased_and_listed_once() -> None:
    headers = sample()
    assert list(headers) == ["set-cookie", "content-type"]
    assert len(headers) == 2
    assert "CONTENT-type" in headers
    assert "x-missing" not in headers
    not_a_str: object = b"content-type"
    assert not_a_str not in headers  # names are looked up as str


def test_raw_keeps_the_bytes_and_order_given() -> None:
    assert sample().raw == [(b"Set-Cookie", b"a=1"), (b"Content-Type", b"text/html"),
                            (b"set-cookie", b"b=2")]


def test_multi_items_keeps_every_pair_in_order() -> None:
    assert sample().multi_items() == [("set-cookie", "a=1"), ("content-type", "text/html"),
                                      ("set-cookie", "b=2")]


def test_get_list_returns_a_copy() -> None:
    headers = sample()
    headers.get_list("set-cookie").append("c=3")
    assert headers.get_list("set-cookie") == ["a=1", "b=2"]


# -- writing, and the lazily built index staying right -----------------------------------------


def test_setitem_replaces_every_value_of_the_name() -> None:
    headers = sample()
    assert headers["set-cookie"] == "a=1, b=2"  # builds the index before the change
    headers["SET-COOKIE"] = "c=3"
    assert headers.get_list("set-cookie") == ["c=3"]
    assert headers["content-type"] == "text/html"
    assert len(headers.raw) == 2


def test_add_keeps_the_existing_values() -> None:
    headers = sample()
    assert headers.get_list("set-cookie") == ["a=1", "b=2"]
    headers.add("Set-Cookie", "c=3")
    assert headers.get_list("set-cookie") == ["a=1", "b=2", "c=3"]
    headers.add("X-New", "1")
    assert headers["x-new"] == "1"


def test_delitem_removes_every_value() -> None:
    headers = sample()
    assert "set-cookie" in headers
    del headers["Set-Cookie"]
    assert "set-cookie" not in headers
    assert headers.raw == [(b"Content-Type", b"text/html")]
    with pytest.raises(KeyError):
        del headers["set-cookie"]


@pytest.mark.parametrize("name", ["\u20ac", "caf\u00e9", "\U0001f600"])
def test_delitem_of_a_name_no_header_can_have_is_a_key_error(name: str) -> None:
    headers = sample()
    with pytest.raises(KeyError):
        del headers[name]
    assert headers == sample()


def test_copy_is_independent() -> None:
    headers = sample()
    copy = headers.copy()
    copy["content-type"] = "text/plain"
    copy.add("x-extra", "1")
    assert headers["content-type"] == "text/html"
    assert "x-extra" not in headers
    assert copy["content-type"] == "text/plain"


def test_from_raw_wraps_parser_output_without_copying() -> None:
    raw = [(b"Server", b"nginx"), (b"Via", b"a"), (b"via", b"b")]
    headers = Headers.from_raw(raw)
    assert headers.raw is raw
    assert headers["via"] == "a, b"


def test_values_from_the_wire_decode_as_latin1() -> None:
    headers = Headers.from_raw([(b"X-Name", b"caf\xe9")])
    assert headers["x-name"] == "caf\u00e9"


# -- from_block: splitting the parser's raw header block ---------------------------------------


def test_from_block_splits_lines_and_trims_values() -> None:
    block = b"Server: nginx\r\nVia:a\r\nvia: \t b \t\r\nX-Empty:\r\nX-Colon: a:b"
    headers = Headers.from_block(block)
    assert headers.raw == [(b"Server", b"nginx"), (b"Via", b"a"), (b"via", b"b"),
                           (b"X-Empty", b""), (b"X-Colon", b"a:b")]
    assert headers["via"] == "a, b"
    assert Headers.from_block(b"").raw == []


_NAME_BYTES = st.from_regex(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
_VALUE_BYTES = st.from_regex(rb"[\x21-\x7e\x80-\xff :\t]{0,12}", fullmatch=True)  # obs-text too


@given(st.lists(st.tuples(_NAME_BYTES, _VALUE_BYTES), max_size=10))
def test_from_block_gives_back_the_lines_it_was_built_from(
        lines: list[tuple[bytes, bytes]]) -> None:
    block = b"\r\n".join(name + b": " + value + b" \t" for name, value in lines)
    assert Headers.from_block(block).raw == [(n, v.strip(b" \t")) for n, v in lines]


def test_a_wire_response_splits_its_headers_only_when_they_are_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    original = Headers.from_block

    def counting(block: bytes) -> Headers:
        calls.append(block)
        return original(block)

    monkeypatch.setattr(Headers, "from_block", staticmethod(counting))
    response = Response.from_wire(200, b"HTTP/1.1 200 OK", b"Server: x\r\nVia: a", b"body",
                                  Request("GET", "http://h/"), 0.0)
    assert (response.status_code, response.content, response.reason_phrase) == (200, b"body",
                                                                                 "OK")
    assert calls == []  # nobody read a header: the block was not split
    assert response.headers["server"] == "x"
    assert response.headers["via"] == "a"
    assert calls == [b"Server: x\r\nVia: a"]  # split once, on first use


def test_models_no_longer_import_the_codecs_splitter() -> None:
    import poolhttp._models as models

    assert not hasattr(models, "split_header_block")


# -- str values are latin-1 both ways ----------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00fc", "caf\u00e9", "\u00a0\u00ff", "plain"])
def test_str_value_reads_back_as_given(value: str) -> None:
    headers = Headers([("a", value)])
    assert headers["a"] == value
    assert headers.get_list("a") == [value]
    assert headers.multi_items() == [("a", value)]
    assert headers.raw == [(b"a", value.encode("latin-1"))]


def test_setitem_and_add_use_latin1_too() -> None:
    headers = Headers()
    headers["a"] = "\u00fc"
    headers.add("b", "\u00e9")
    assert (headers["a"], headers["b"]) == ("\u00fc", "\u00e9")
    assert headers.raw == [(b"a", b"\xfc"), (b"b", b"\xe9")]


@pytest.mark.parametrize("value", ["\u20ac", "a\U0001f600", "\u0100"])
def test_str_value_outside_latin1_is_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest, match="'X-Name' has a value that is not latin-1 text"):
        Headers([("X-Name", value)])
    headers = Headers()
    with pytest.raises(InvalidRequest, match="not latin-1"):
        headers["X-Name"] = value
    assert headers.raw == []


def test_bytes_value_is_sent_as_given_and_read_as_latin1() -> None:
    headers = Headers([(b"X-Name", "\u20ac".encode())])  # the caller chose UTF-8
    assert headers.raw == [(b"X-Name", b"\xe2\x82\xac")]
    assert headers["x-name"].encode("latin-1").decode("utf-8") == "\u20ac"


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20))
def test_any_latin1_value_round_trips(text: str) -> None:
    value = text.strip(" \t")  # surrounding blanks are trimmed on the way in
    assert Headers([("x", value)])["x"] == value


# -- construction and validation ---------------------------------------------------------------


@pytest.mark.parametrize("given_headers", [
    {"Accept": "*/*"},
    {b"Accept": b"*/*"},
    [("Accept", "*/*")],
    [(b"Accept", b"*/*")],
    Headers([("Accept", "*/*")]),
])
def test_accepted_input_forms(given_headers: HeaderTypes) -> None:
    assert Headers(given_headers).raw == [(b"Accept", b"*/*")]


def test_no_headers() -> None:
    assert encode_header_pairs(None) == []
    assert Headers().raw == []
    assert len(Headers({})) == 0


def test_surrounding_whitespace_is_trimmed() -> None:
    assert encode_header_pairs([(" X-A ", " \t v a l \t ")]) == [(b"X-A", b"v a l")]


def test_empty_value_and_inner_tab_are_allowed() -> None:
    assert encode_header_pairs([("X-Empty", ""), ("X-Tab", "a\tb")]) == [
        (b"X-Empty", b""), (b"X-Tab", b"a\tb")]


@pytest.mark.parametrize("name", ["", "a b", "x:", "caf\u00e9", "\u20ac", "a\r\nb",
                                  "(comment)"])
def test_invalid_name_is_rejected(name: str) -> None:
    with pytest.raises(InvalidRequest, match="invalid header name"):
        Headers([(name, "v")])


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"])
def test_value_with_cr_lf_or_nul_is_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest, match="'X-Name' has a CR, LF or NUL"):
        encode_header_pairs([("X-Name", value)])
    with pytest.raises(InvalidRequest, match="b'X-Name' has a CR, LF or NUL"):
        encode_header_pairs([(b"X-Name", value.encode())])


@pytest.mark.parametrize("items", [[("a",)], [("a", "1", "2")], [1], "ab"])
def test_items_that_are_not_pairs_are_rejected(items: HeaderTypes) -> None:
    with pytest.raises(InvalidRequest, match="must be \\(name, value\\) pairs"):
        Headers(items)


@pytest.mark.parametrize(("pair", "what"), [(("a", 1), "value"), ((1, "a"), "name")])
def test_non_text_name_or_value_is_rejected(pair: tuple[object, object], what: str) -> None:
    with pytest.raises(InvalidRequest, match=f"header {what} must be str or bytes, not int"):
        Headers([pair])  # type: ignore[arg-type]


def test_invalid_request_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid header name"):
        Headers([("a b", "v")])


def test_setitem_and_add_validate() -> None:
    headers = sample()
    with pytest.raises(InvalidRequest):
        headers["bad name"] = "v"
    with pytest.raises(InvalidRequest):
        headers.add("X-Ok", "v\r\nX-Injected: 1")
    assert headers == sample()  # a rejected change leaves the headers as they were


# -- equality ----------------------------------------------------------------------------------


def test_equality() -> None:
    headers = Headers([("A", "1"), ("b", "2")])
    assert headers == Headers([("B", "2"), ("a", "1")])  # order of names does not matter
    assert headers == {"a": "1", "B": "2"}
    assert headers != {"a": "1"}
    assert headers != Headers([("A", "1"), ("b", "3")])
    assert headers != 42


def test_headers_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Headers())


def test_repr_shows_the_pairs() -> None:
    assert repr(Headers([("A", "1")])) == "Headers([('a', '1')])"


# -- properties --------------------------------------------------------------------------------

_TOKEN = st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}", fullmatch=True)
_VALUE = st.from_regex(r"([!-~]([ !-~]{0,10}[!-~])?)?", fullmatch=True)  # visible ASCII


@given(st.lists(st.tuples(_TOKEN, _VALUE), max_size=12))
def test_every_value_is_found_under_any_case_of_its_name(pairs: list[tuple[str, str]]) -> None:
    headers = Headers(pairs)
    for name, _ in pairs:
        expected = [v for n, v in pairs if n.lower() == name.lower()]
        assert headers.get_list(name.swapcase()) == expected
        assert headers[name.upper()] == ", ".join(expected)
    assert len(headers) == len({name.lower() for name, _ in pairs})
    assert headers.raw == [(n.encode(), v.encode()) for n, v in pairs]


def test_repr_hides_credentials() -> None:
    headers = Headers([("Authorization", "Bearer s3cret"), ("Cookie", "session=abc"),
                       ("Accept", "*/*")])
    text = repr(headers)
    assert "s3cret" not in text
    assert "abc" not in text
    assert "'accept', '*/*'" in text
    assert headers["authorization"] == "Bearer s3cret"  # only the repr hides it


# -- the `headers` column of `poolhttp fetch`'s database -------------------------------------

_header_bytes = st.binary(max_size=12) | st.sampled_from(
    [b"Content-Type", b"content-type", b"CONTENT-TYPE", b"text/html", b'a"b', b"a\\b", b"\x7f",
     b"caf\xe9", b"\t", b""])


@given(st.lists(st.tuples(_header_bytes, _header_bytes), max_size=8))
def test_headers_json_is_what_json_dumps_gives(raw: list[tuple[bytes, bytes]]) -> None:
    text, content_type = headers_json(raw)
    pairs = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in raw]
    assert text == json.dumps(pairs, ensure_ascii=False)
    assert json.loads(text) == pairs
    assert content_type == (Headers.from_raw(raw).get("content-type") if raw else None)
