"""Proxy handshakes (`_core/tunnel.py`) against scripted proxies: every byte the client sends
is compared with what RFC 9110 (CONNECT), RFC 1928 / RFC 1929 (SOCKS5) and the SOCKS4 and
SOCKS4a documents say it must be, written out by hand, and every proxy reply is plain bytes.
No sockets."""

from __future__ import annotations

import sys

import pytest

from poolhttp import ConnectError, InvalidURL, ProxyError
from poolhttp._core.tunnel import (
    MAX_REPLY_HEAD,
    Handshake,
    make_handshake,
    proxy_unreachable,
)
from poolhttp._proxy import Proxy

ORIGIN = "https://example.com:443"
PASSWORD = "s3cret"

# A scripted conversation: (what the client must send, what the proxy answers), in turn.
Script = list[tuple[bytes, bytes]]


def handshake(proxy: str, host: str = "example.com", port: int = 443, *,
              address: str | None = None, user_agent: bytes | None = None) -> Handshake:
    return make_handshake(Proxy(proxy), host, port, origin=ORIGIN, target_address=address,
                          user_agent=user_agent)


def converse(shake: Handshake, script: Script, *, bytewise: bool = False) -> bytes:
    """Play `script`: each reply is fed whole, or one byte at a time; the client must answer
    only once a reply is complete, with exactly the next expected bytes. Returns what the
    connection gets once the tunnel is open: the handshake's leftover, then the bytes a
    driver would not have fed it (they arrived after the end)."""
    sent = shake.start()
    for expected, reply in script:
        assert sent == expected
        sent = b""
        pieces = [reply[i:i + 1] for i in range(len(reply))] if bytewise else [reply]
        for index, piece in enumerate(pieces):
            assert sent == b"", "the client answered a reply it had only part of"
            if shake.done:
                return shake.leftover + b"".join(pieces[index:])
            sent += shake.feed(piece)
    assert sent == b""
    return shake.leftover if shake.done else b""


def refusal(shake: Handshake, script: Script, *, bytewise: bool = False) -> ProxyError:
    with pytest.raises(ProxyError) as caught:
        converse(shake, script, bytewise=bytewise)
    assert not shake.done
    assert PASSWORD not in str(caught.value)
    return caught.value


# -- HTTP CONNECT -------------------------------------------------------------------------------

CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"


def test_connect_request_bytes() -> None:
    assert handshake("http://127.0.0.1:3128").start() == CONNECT


def test_connect_request_with_credentials_and_user_agent() -> None:
    shake = handshake(f"http://ada:{PASSWORD}@127.0.0.1:3128", user_agent=b"poolhttp/0.1")
    assert shake.start() == (b"CONNECT example.com:443 HTTP/1.1\r\n"
                             b"Host: example.com:443\r\n"
                             b"Proxy-Authorization: Basic YWRhOnMzY3JldA==\r\n"  # ada:s3cret
                             b"User-Agent: poolhttp/0.1\r\n\r\n")


def test_connect_to_an_ipv6_target_brackets_it() -> None:
    for host in ("2001:db8::1", "[2001:db8::1]"):
        assert handshake("https://proxy:8443", host, 8080).start() == (
            b"CONNECT [2001:db8::1]:8080 HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n")


def test_user_agent_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="CR, LF"):
        handshake("http://proxy:3128", user_agent=b"x\r\nEvil: 1")


@pytest.mark.parametrize("bytewise", [False, True])
def test_200_opens_the_tunnel_and_keeps_the_bytes_after_it(bytewise: bool) -> None:
    shake = handshake("http://proxy:3128")
    reply = b"HTTP/1.1 200 OK\r\nVia: 1.1 squid\r\nContent-Length: 12\r\n\r\n\x16\x03\x01tls"
    # A 2xx to CONNECT has no body, whatever its headers say: the rest is the tunnel's.
    assert converse(shake, [(CONNECT, reply)], bytewise=bytewise) == b"\x16\x03\x01tls"
    assert shake.done
    assert shake.leftover == (b"" if bytewise else b"\x16\x03\x01tls")


def test_any_2xx_an_http_10_reply_and_bare_line_feeds_open_it() -> None:
    for reply in (b"HTTP/1.0 204 Tunnel\r\n\r\n", b"HTTP/1.1 200\r\n\r\n",
                  b"HTTP/1.1 200 OK\nVia: x\n\nrest"):
        shake = handshake("http://proxy:3128")
        converse(shake, [(CONNECT, reply)])
        assert shake.done
        assert shake.leftover == (b"rest" if reply.endswith(b"rest") else b"")


def test_interim_1xx_replies_are_skipped() -> None:
    shake = handshake("http://proxy:3128")
    reply = b"HTTP/1.1 100 Continue\r\n\r\n" + ESTABLISHED + b"x"
    assert converse(shake, [(CONNECT, reply)], bytewise=True) == b"x"
    assert shake.done
    shake = handshake("http://proxy:3128")
    assert converse(shake, [(CONNECT, reply)]) == b"x"
    assert shake.leftover == b"x"


def test_407_without_credentials_says_none_were_sent() -> None:
    error = refusal(handshake("http://127.0.0.1:3128"), [
        (CONNECT, b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                  b"Proxy-Authenticate: Basic realm=\"squid\"\r\nContent-Length: 5\r\n\r\nnope!")])
    assert error.status == 407
    assert error.reply is None
    assert error.proxy == "http://127.0.0.1:3128"
    assert error.origin == ORIGIN
    assert str(error).startswith("proxy http://127.0.0.1:3128 refused CONNECT to "
                                 "example.com:443: 407 Proxy Authentication Required")
    assert "no credentials were sent" in str(error)


def test_407_with_credentials_says_they_were_sent_and_never_shows_the_password() -> None:
    shake = handshake(f"http://ada:{PASSWORD}@127.0.0.1:3128")
    request = (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
               b"Proxy-Authorization: Basic YWRhOnMzY3JldA==\r\n\r\n")
    error = refusal(shake, [(request, b"HTTP/1.1 407 Denied\r\n\r\n")])
    assert error.status == 407
    assert "credentials for user 'ada' were sent" in str(error)
    assert error.proxy == "http://127.0.0.1:3128"


@pytest.mark.parametrize(("reply", "status"), [
    (b"HTTP/1.1 403 Forbidden\r\n\r\n", 403),
    (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", 502),
    (b"HTTP/1.1 301 Moved\r\nLocation: /\r\n\r\n", 301),
])
def test_other_statuses_are_refusals(reply: bytes, status: int) -> None:
    error = refusal(handshake("http://proxy:3128"), [(CONNECT, reply)], bytewise=True)
    assert isinstance(error, ConnectError)  # nothing reached the origin: safe to retry
    assert error.status == status
    assert f"refused CONNECT to example.com:443: {status} " in str(error)


@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/1.1 abc Nope\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"\r\n\r\n",
])
def test_malformed_status_lines(reply: bytes) -> None:
    error = refusal(handshake("http://proxy:3128"), [(CONNECT, reply)])
    assert error.status is None
    assert "malformed CONNECT reply" in str(error)


def test_a_reply_head_over_64_kib_is_refused_even_without_its_end() -> None:
    shake = handshake("http://proxy:3128")
    shake.start()
    shake.feed(b"HTTP/1.1 200 OK\r\n")
    filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    for _ in range(MAX_REPLY_HEAD // len(filler)):  # up to the bound: it waits for more
        assert shake.feed(filler) == b""
    with pytest.raises(ProxyError, match="over 64 KiB"):
        shake.feed(filler)
    assert not shake.done


def test_a_complete_reply_head_over_64_kib_is_refused() -> None:
    shake = handshake("http://proxy:3128")
    shake.start()
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_REPLY_HEAD + b"\r\n\r\n"
    with pytest.raises(ProxyError, match="over 64 KiB"):
        shake.feed(head)


def test_a_head_just_under_the_bound_passes() -> None:
    shake = handshake("http://proxy:3128")
    shake.start()
    line = b"HTTP/1.1 200 OK\r\nX-Big: "
    shake.feed(line + b"a" * (MAX_REPLY_HEAD - len(line) - 2) + b"\r\n\r\n")
    assert shake.done


def test_eof_before_and_during_the_reply() -> None:
    shake = handshake("http://127.0.0.1:3128")
    shake.start()
    with pytest.raises(ProxyError, match=r"closed the connection before replying to CONNECT to "
                                         r"example\.com:443"):
        shake.eof()
    shake.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ProxyError, match="in the middle of its reply"):
        shake.eof()


def test_driving_out_of_turn_is_a_bug() -> None:
    shake = handshake("http://proxy:3128")
    with pytest.raises(RuntimeError):
        shake.feed(b"HTTP/1.1 200 OK\r\n\r\n")
    shake.start()
    with pytest.raises(RuntimeError):
        shake.start()
    shake.feed(ESTABLISHED)
    with pytest.raises(RuntimeError):
        shake.feed(b"more")
    with pytest.raises(RuntimeError):
        shake.eof()


def test_proxy_unreachable_names_the_proxy_without_credentials() -> None:
    error = proxy_unreachable(Proxy(f"socks5://ada:{PASSWORD}@10.0.0.1"), origin=ORIGIN,
                              reason="Connection refused")
    assert isinstance(error, ConnectError)
    assert str(error) == ("cannot connect to proxy socks5://10.0.0.1:1080 (for "
                          "https://example.com:443): Connection refused")
    assert (error.proxy, error.origin, error.status, error.reply) == (
        "socks5://10.0.0.1:1080", ORIGIN, None, None)


# -- SOCKS5 (RFC 1928, RFC 1929) ----------------------------------------------------------------

NO_AUTH_OFFER = b"\x05\x01\x00"  # VER 5, one method: 0x00 no authentication
AUTH_OFFER = b"\x05\x02\x00\x02"  # VER 5, two methods: no authentication, username/password
CHOSE_NO_AUTH = b"\x05\x00"
CHOSE_PASSWORD = b"\x05\x02"
# VER 5, CMD 1 CONNECT, RSV, ATYP 3 (domain), length 11, "example.com", port 443
CONNECT_NAME = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
# VER 5, REP 0, RSV, ATYP 1, bound 10.0.0.1:4660
SUCCEEDED = b"\x05\x00\x00\x01\x0a\x00\x00\x01\x12\x34"
# RFC 1929: VER 1, ULEN 3 "ada", PLEN 6 "s3cret"
LOGIN = b"\x01\x03ada\x06s3cret"


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks5h_without_auth_sends_the_name(bytewise: bool) -> None:
    shake = handshake("socks5h://127.0.0.1:1080")
    assert converse(shake, [(NO_AUTH_OFFER, CHOSE_NO_AUTH), (CONNECT_NAME, SUCCEEDED + b"HTTP")],
                    bytewise=bytewise) == b"HTTP"
    assert shake.done
    assert shake.leftover == (b"" if bytewise else b"HTTP")


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks5h_with_username_and_password(bytewise: bool) -> None:
    shake = handshake(f"socks5h://ada:{PASSWORD}@127.0.0.1:1080")
    converse(shake, [(AUTH_OFFER, CHOSE_PASSWORD), (LOGIN, b"\x01\x00"),
                     (CONNECT_NAME, SUCCEEDED)], bytewise=bytewise)
    assert shake.done
    assert shake.leftover == b""


def test_socks5_with_credentials_when_the_proxy_needs_none() -> None:
    shake = handshake(f"socks5h://ada:{PASSWORD}@127.0.0.1:1080")
    converse(shake, [(AUTH_OFFER, CHOSE_NO_AUTH), (CONNECT_NAME, SUCCEEDED)])
    assert shake.done


def test_socks5_sends_the_resolved_address() -> None:
    # ATYP 1: 93.184.216.34 ; ATYP 4: 2001:db8::1 ; port 443
    v4 = b"\x05\x01\x00\x01\x5d\xb8\xd8\x22\x01\xbb"
    v6 = b"\x05\x01\x00\x04\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01\x01\xbb"
    for address, request in (("93.184.216.34", v4), ("2001:db8::1", v6)):
        shake = handshake("socks5://127.0.0.1:1080", address=address)
        converse(shake, [(NO_AUTH_OFFER, CHOSE_NO_AUTH), (request, SUCCEEDED)])
        assert shake.done


def test_socks5_to_an_ip_literal_host_needs_no_target_address() -> None:
    shake = handshake("socks5://127.0.0.1:1080", "10.1.2.3", 80)
    converse(shake, [(NO_AUTH_OFFER, CHOSE_NO_AUTH),
                     (b"\x05\x01\x00\x01\x0a\x01\x02\x03\x00\x50", SUCCEEDED)])
    assert shake.done


def test_socks5_without_a_resolved_address_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"resolve 'example.com' and pass target_address .*"
                                         r"socks5h://"):
        handshake("socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="must be an IP address"):
        handshake("socks5://127.0.0.1:1080", address="example.com")


@pytest.mark.parametrize("bound", [
    b"\x03\x05proxy\x00\x50",  # ATYP 3: a name, "proxy", port 80
    b"\x04" + b"\x00" * 15 + b"\x01\x00\x50",  # ATYP 4: ::1, port 80
])
def test_socks5_success_replies_with_other_bound_address_types(bound: bytes) -> None:
    shake = handshake("socks5h://127.0.0.1:1080")
    script = [(NO_AUTH_OFFER, CHOSE_NO_AUTH), (CONNECT_NAME, b"\x05\x00\x00" + bound + b"after")]
    assert converse(shake, script, bytewise=True) == b"after"
    assert shake.done
    shake = handshake("socks5h://127.0.0.1:1080")
    assert converse(shake, script) == b"after"
    assert shake.leftover == b"after"


@pytest.mark.parametrize(("code", "name"), [
    (0x01, "general failure"),
    (0x02, "connection not allowed by ruleset"),
    (0x03, "network unreachable"),
    (0x04, "host unreachable"),
    (0x05, "connection refused"),
    (0x06, "TTL expired"),
    (0x07, "command not supported"),
    (0x08, "address type not supported"),
    (0x09, "unknown reply 0x09"),
])
def test_socks5_failure_replies(code: int, name: str) -> None:
    reply = b"\x05" + bytes([code]) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
    error = refusal(handshake(f"socks5h://ada:{PASSWORD}@127.0.0.1:1080"), [
        (AUTH_OFFER, CHOSE_PASSWORD), (LOGIN, b"\x01\x00"), (CONNECT_NAME, reply)])
    assert error.reply == name
    assert error.status is None
    assert error.proxy == "socks5h://127.0.0.1:1080"
    assert str(error) == (f"proxy socks5h://127.0.0.1:1080 failed to connect to "
                          f"example.com:443: {name} (SOCKS5 reply {code:#04x})")


def test_socks5_failure_is_reported_before_the_rest_of_the_reply() -> None:
    shake = handshake("socks5h://127.0.0.1:1080")
    assert shake.start() == NO_AUTH_OFFER
    assert shake.feed(CHOSE_NO_AUTH) == CONNECT_NAME
    shake.feed(b"\x05")
    with pytest.raises(ProxyError) as caught:
        shake.feed(b"\x05")  # a proxy may close right after REP; we still say why
    assert caught.value.reply == "connection refused"


def test_socks5_no_acceptable_methods() -> None:
    error = refusal(handshake("socks5h://127.0.0.1:1080"), [(NO_AUTH_OFFER, b"\x05\xff")])
    assert error.reply == "no acceptable authentication methods"
    assert "none of the authentication methods offered (no authentication)" in str(error)


def test_socks5_authentication_failure() -> None:
    error = refusal(handshake(f"socks5h://ada:{PASSWORD}@127.0.0.1:1080"), [
        (AUTH_OFFER, CHOSE_PASSWORD), (LOGIN, b"\x01\x01")], bytewise=True)
    assert error.reply == "authentication failed"
    assert "rejected the user name and password" in str(error)


def test_socks5_percent_decoded_utf8_credentials_on_the_wire() -> None:
    shake = handshake("socks5h://zo%C3%AB:p%40ss@127.0.0.1:1080")
    converse(shake, [(AUTH_OFFER, CHOSE_PASSWORD),
                     (b"\x01\x04zo\xc3\xab\x04p@ss", b"\x01\x00"),
                     (CONNECT_NAME, SUCCEEDED)])
    assert shake.done


@pytest.mark.parametrize(("script", "what"), [
    ([(NO_AUTH_OFFER, b"\x04\x00")], "version 4, not 5"),  # a SOCKS4 proxy, say
    ([(NO_AUTH_OFFER, b"\x05\x02")], "authentication method 2, not offered"),
    ([(NO_AUTH_OFFER, b"\x05\x01")], "authentication method 1, not offered"),  # GSSAPI
    ([(NO_AUTH_OFFER, b"\x05\x03")], "Malformed reply"),  # no such method at all: socksio's
    ([(AUTH_OFFER, CHOSE_PASSWORD), (LOGIN, b"\x05\x00")], "authentication reply version 5"),
    ([(NO_AUTH_OFFER, CHOSE_NO_AUTH), (CONNECT_NAME, b"\x04\x00\x00\x01")], "version 4"),
    ([(NO_AUTH_OFFER, CHOSE_NO_AUTH), (CONNECT_NAME, b"\x05\x00\x00\x07\x00")],
     "unknown address type 7"),
])
def test_socks5_malformed_replies(script: Script, what: str) -> None:
    if script[0][0] == AUTH_OFFER:
        shake = handshake(f"socks5h://ada:{PASSWORD}@127.0.0.1:1080")
    else:
        shake = handshake("socks5h://127.0.0.1:1080")
    error = refusal(shake, script)
    assert "malformed SOCKS5 reply for example.com:443" in str(error)
    assert what in str(error)


def test_socks5_eof_mid_handshake() -> None:
    shake = handshake("socks5h://127.0.0.1:1080")
    assert shake.start() == NO_AUTH_OFFER
    assert shake.feed(CHOSE_NO_AUTH) == CONNECT_NAME
    shake.feed(SUCCEEDED[:6])
    with pytest.raises(ProxyError, match=r"closed the connection during the SOCKS5 handshake for "
                                         r"example\.com:443"):
        shake.eof()


def test_socks5_host_name_over_255_bytes() -> None:
    with pytest.raises(InvalidURL, match="over 255 bytes"):
        handshake("socks5h://127.0.0.1:1080", "a" * 256)


def test_socks5_without_socksio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)  # makes `import socksio` fail
    with pytest.raises(ImportError, match=r"pip install 'poolhttp\[socks\]'"):
        handshake("socks5h://127.0.0.1:1080")


def test_socks4_needs_no_socksio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)
    assert handshake("socks4a://127.0.0.1:1080").start().startswith(b"\x04\x01")


# -- SOCKS4 and SOCKS4a -----------------------------------------------------------------------

# VN 0, CD 90 granted, then port and address (ignored by a client)
GRANTED = b"\x00\x5a\x00\x00\x00\x00\x00\x00"
# VN 4, CD 1, port 443, DSTIP 0.0.0.1 (SOCKS4a: a name follows), USERID "", "example.com"
SOCKS4A_REQUEST = b"\x04\x01\x01\xbb\x00\x00\x00\x01\x00example.com\x00"


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks4_sends_the_ipv4_address_and_an_empty_user_id(bytewise: bool) -> None:
    shake = handshake("socks4://127.0.0.1:1080", address="93.184.216.34")
    # VN 4, CD 1 CONNECT, port 443, 93.184.216.34, USERID "" and its NUL
    assert converse(shake, [(b"\x04\x01\x01\xbb\x5d\xb8\xd8\x22\x00", GRANTED + b"tail")],
                    bytewise=bytewise) == b"tail"
    assert shake.done
    assert shake.leftover == (b"" if bytewise else b"tail")


@pytest.mark.parametrize("bytewise", [False, True])
def test_socks4a_sends_the_name_and_the_user_id(bytewise: bool) -> None:
    shake = handshake(f"socks4a://ada:{PASSWORD}@127.0.0.1:1080")
    # VN 4, CD 1, port 443, DSTIP 0.0.0.1 (SOCKS4a: a name follows), USERID "ada", name
    converse(shake, [(b"\x04\x01\x01\xbb\x00\x00\x00\x01ada\x00example.com\x00", GRANTED)],
             bytewise=bytewise)
    assert shake.done
    assert shake.leftover == b""


def test_socks4a_to_an_ipv4_literal_sends_plain_socks4() -> None:
    shake = handshake("socks4a://127.0.0.1:1080", "10.0.0.1", 80)
    assert shake.start() == b"\x04\x01\x00\x50\x0a\x00\x00\x01\x00"


@pytest.mark.parametrize(("code", "name"), [
    (91, "request rejected or failed"),
    (92, "request rejected: the proxy cannot reach identd on the client"),
    (93, "request rejected: identd reports a different user id"),
    (17, "unknown reply 17"),
])
def test_socks4_failure_replies(code: int, name: str) -> None:
    error = refusal(handshake("socks4a://127.0.0.1:1080"),
                    [(SOCKS4A_REQUEST, b"\x00" + bytes([code]) + b"\x00" * 6)], bytewise=True)
    assert error.reply == name
    assert str(error) == (f"proxy socks4a://127.0.0.1:1080 failed to connect to "
                          f"example.com:443: {name} (SOCKS4 reply {code})")


def test_socks4_malformed_reply() -> None:
    error = refusal(handshake("socks4a://127.0.0.1:1080"),
                    [(SOCKS4A_REQUEST, b"\x04\x5a\x00\x00\x00\x00\x00\x00")])
    assert "malformed SOCKS4 reply" in str(error)
    assert "version 4, not 0" in str(error)


def test_socks4_cannot_carry_ipv6() -> None:
    with pytest.raises(ProxyError, match="SOCKS4 has IPv4 only"):
        handshake("socks4://127.0.0.1:1080", address="2001:db8::1")
    with pytest.raises(ProxyError, match="SOCKS4 has IPv4 only"):
        handshake("socks4a://127.0.0.1:1080", "::1", 443)


def test_socks4_without_a_resolved_address_points_at_socks4a() -> None:
    with pytest.raises(ValueError, match="socks4a://"):
        handshake("socks4://127.0.0.1:1080")


def test_socks4_eof() -> None:
    shake = handshake("socks4a://127.0.0.1:1080")
    shake.start()
    shake.feed(GRANTED[:3])
    with pytest.raises(ProxyError, match="during the SOCKS4 handshake"):
        shake.eof()
