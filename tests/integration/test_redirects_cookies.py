"""Redirects, cookies, Basic auth from userinfo, and event hooks, on all three client kinds,
against scripted servers (exact Location and Set-Cookie bytes, loops, cross-origin hops)."""

from __future__ import annotations

import gzip
import time
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.scripted import ReceivedRequest, Reply, ServerFactory


def redirector(request: ReceivedRequest) -> Reply:
    """/r/<status>/<location...> answers <status> with that Location; /echo echoes."""
    parts = request.path.split("/", 3)
    if parts[1] == "r":
        status, location = int(parts[2]), "/" + parts[3] if len(parts) > 3 else ""
        if request.query:
            location += "?" + request.query
        return Reply.ok(b"moved", headers={"Location": location.replace("/ABS:", "")},
                        status=status)
    if request.path == "/loop":
        return Reply.ok(b"", headers={"Location": "/loop"}, status=302)
    headers = {name.lower(): value for name, value in request.headers}
    body = f"{request.method} {request.target} {len(request.body)} " \
           f"ct={headers.get('content-type')} auth={headers.get('authorization')} " \
           f"cookie={headers.get('cookie')}".encode()
    return Reply.ok(body)


@pytest.fixture
def client(client_kind: str) -> Any:
    with make_client(client_kind, follow_redirects=True) as client:
        yield client


def test_redirects_are_followed_with_history(client: Any,
                                             scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    response = client.get(server.url("/r/301/r/302/echo"))
    assert response.status_code == 200
    assert response.content.startswith(b"GET /echo 0")
    assert [r.status_code for r in response.history] == [301, 302]
    assert [str(r.request.url) for r in response.history] == [
        server.url("/r/301/r/302/echo"), server.url("/r/302/echo")]
    assert response.history[0].content == b"moved"  # read, and the connection released
    assert server.accepted == 1  # one keep-alive connection served every hop


@pytest.mark.parametrize(("status", "method", "expected"), [
    (301, "POST", b"GET /echo 0 ct=None"), (302, "POST", b"GET /echo 0 ct=None"),
    (303, "POST", b"GET /echo 0 ct=None"), (303, "PUT", b"GET /echo 0 ct=None"),
    (307, "POST", b"POST /echo 5 ct=application/json"),
    (308, "PUT", b"PUT /echo 5 ct=application/json"), (301, "PUT", b"PUT /echo 5")])
def test_method_and_body_rules(client: Any, scripted_server: ServerFactory, status: int,
                               method: str, expected: bytes) -> None:
    server = scripted_server(redirector)
    response = client.request(method, server.url(f"/r/{status}/echo"), json=[1, 2])
    assert response.content.startswith(expected)


def test_a_streamed_body_is_not_replayed(client_kind: str,
                                         scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    with make_client(client_kind, follow_redirects=True) as client, \
            pytest.raises(poolhttp.RequestNotReplayable, match="307 redirect"):
        client.post(server.url("/r/307/echo"), content=iter([b"once"]))


def test_relative_locations_resolve_by_rfc_3986(client: Any,
                                                scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    # /r/302/../echo?x=1 -> Location "/../echo?x=1" resolved against /r/302/...: /echo?x=1
    response = client.get(server.url("/r/302/../echo?x=1"))
    assert response.content.startswith(b"GET /echo?x=1 ")


def test_redirect_loops_stop_at_max_redirects(client_kind: str,
                                              scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    with make_client(client_kind, follow_redirects=True, max_redirects=5) as client, \
            pytest.raises(poolhttp.TooManyRedirects, match="6 redirects in a row"):
        client.get(server.url("/loop"))


def test_not_followed_unless_asked(client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    with make_client(client_kind) as client:
        response = client.get(server.url("/r/302/echo"))
        assert response.status_code == 302
        assert response.history == []
        followed = client.get(server.url("/r/302/echo"), follow_redirects=True)
        assert followed.status_code == 200


def test_credentials_do_not_follow_to_another_origin(client: Any,
                                                     scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(redirector)
    other = servers.url("/echo", 1)
    same = client.get(servers.url("/r/302/echo", 0),
                      headers={"Authorization": "Bearer secret"})
    assert b"auth=Bearer secret" in same.content
    moved = client.get(servers.url(f"/r/302/ABS:{other}", 0),
                       headers={"Authorization": "Bearer secret"}, auth=("ada", "pw"))
    assert moved.content.startswith(b"GET /echo 0")
    assert b"auth=None" in moved.content


def test_a_location_of_another_scheme_is_refused(client: Any,
                                                 scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(
        b"", headers={"Location": "ftp://files.example/x"}, status=302))
    with pytest.raises(poolhttp.InvalidURL, match="unsupported URL scheme 'ftp'"):
        client.get(server.url("/"))


def cookie_server(request: ReceivedRequest) -> Reply:
    if request.path == "/login":
        return Reply.ok(b"in", headers=[("Set-Cookie", "session=s1; Path=/; HttpOnly"),
                                        ("Set-Cookie", "scoped=x; Path=/private")])
    if request.path == "/expire":
        return Reply.ok(b"out", headers={"Set-Cookie": "session=; Max-Age=0; Path=/"})
    if request.path == "/to-other":
        return Reply.ok(b"", headers={"Location": request.query}, status=302)
    return Reply.ok(f"cookie={request.get('cookie')}".encode())


def test_a_login_cookie_is_kept_and_scoped(client_kind: str,
                                           scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(cookie_server)
    with make_client(client_kind) as client:
        client.get(servers.url("/login", 0))
        assert client.cookies["session"] == "s1"
        assert client.get(servers.url("/", 0)).content == b"cookie=session=s1"
        assert client.get(servers.url("/private/x", 0)).content == \
            b"cookie=scoped=x; session=s1"
        # Never to a host that did not set it.
        assert client.get(servers.url("/", 1)).content == b"cookie=None"
        client.get(servers.url("/expire", 0))
        assert "session" not in client.cookies


def test_a_cookie_set_on_a_streamed_response_is_kept(client_kind: str,
                                                     scripted_server: ServerFactory) -> None:
    # With an empty jar and nothing else to do, stream() sends the request straight to the
    # pool (as request() does); the Set-Cookie of its response must still reach the jar.
    server = scripted_server(cookie_server)
    with make_client(client_kind) as client:
        with client.stream("GET", server.url("/login")) as response:
            assert response.read() == b"in"
        assert client.cookies["session"] == "s1"
        with client.stream("GET", server.url("/")) as response:
            assert response.read() == b"cookie=session=s1"
        assert server.accepted == 1


def test_cookies_set_by_the_user_go_everywhere_and_per_request_ones_once(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(cookie_server)
    with make_client(client_kind, cookies={"pref": "dark"}) as client:
        assert client.get(server.url("/")).content == b"cookie=pref=dark"
        assert client.get(server.url("/"), cookies={"once": "1"}).content == \
            b"cookie=pref=dark; once=1"
        assert client.get(server.url("/")).content == b"cookie=pref=dark"
        del client.cookies["pref"]
        assert client.get(server.url("/")).content == b"cookie=None"


def test_a_cookie_value_with_cr_lf_is_refused(client_kind: str) -> None:
    with make_client(client_kind) as client, \
            pytest.raises(poolhttp.InvalidRequest, match="control character"):
        client.cookies["evil"] = "x\r\nInjected: 1"


def test_userinfo_becomes_basic_auth_and_stays_out_of_reprs(
        client_kind: str, scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    url = server.url("/echo").replace("://", "://ada:s%40cret@")
    with make_client(client_kind) as client:
        response = client.get(url)
    assert b"auth=Basic YWRhOnNAY3JldA==" in response.content  # ada:s@cret
    assert "s%40cret" not in repr(response.request)
    assert "s%40cret" not in repr(response.request.url)


def test_event_hooks_run_for_every_hop(client_kind: str,
                                       scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    seen: list[str] = []
    hooks = {"request": [lambda request: seen.append(f"> {request.url.path}")],
             "response": [lambda response: seen.append(f"< {response.status_code}")]}
    with make_client(client_kind, follow_redirects=True, event_hooks=hooks) as client:
        client.get(server.url("/r/302/echo"))
    assert seen == ["> /r/302/echo", "< 302", "> /echo", "< 200"]


def test_a_response_hook_may_raise_for_status(client_kind: str,
                                              scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(b"no", status=404))

    def check(response: poolhttp.Response) -> None:
        response.raise_for_status()

    with make_client(client_kind, event_hooks={"response": [check]}) as client, \
            pytest.raises(poolhttp.HTTPStatusError):
        client.get(server.url("/"))


@pytest.mark.parametrize("bad", [{"requests": []}, {"request": [42]}, "hooks"])
def test_bad_event_hooks_are_named(bad: Any) -> None:
    with pytest.raises(poolhttp.InvalidRequest):
        poolhttp.Client(event_hooks=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_max_redirects(bad: Any) -> None:
    with pytest.raises(poolhttp.InvalidRequest, match="max_redirects"):
        poolhttp.Client(max_redirects=bad)


def test_bad_auth_is_named() -> None:
    with pytest.raises(poolhttp.InvalidRequest, match="auth="):
        poolhttp.Client(auth="user:pass")  # type: ignore[arg-type]


def test_a_malformed_location_is_a_typed_error(client: Any,
                                               scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(
        b"", headers={"Location": "http://[::1/x"}, status=302))
    with pytest.raises(poolhttp.InvalidURL, match="cannot follow the redirect"):
        client.get(server.url("/"))


def test_digest_nonce_expiry_is_answered_once_with_the_new_nonce(
        client_kind: str, scripted_server: ServerFactory) -> None:
    """A scripted Digest server (SHA-256) that expires each nonce after one use: the client
    answers the stale challenge with the new nonce, once, and never loops."""
    nonces = iter(f"n{i}" for i in range(100))
    state = {"nonce": next(nonces)}

    def handler(request: ReceivedRequest) -> Reply:
        answer = request.get("authorization") or ""
        challenge = (f'Digest realm="r", qop="auth", algorithm=SHA-256, '
                     f'nonce="{state["nonce"]}"')
        if f'nonce="{state["nonce"]}"' in answer:
            state["nonce"] = next(nonces)  # used once: the next request meets a stale one
            return Reply.ok(b"ok")
        stale = ", stale=true" if answer else ""
        return Reply.ok(b"", headers={"WWW-Authenticate": challenge + stale}, status=401)

    server = scripted_server(handler)
    with make_client(client_kind, auth=poolhttp.DigestAuth("ada", "pw")) as client:
        assert client.get(server.url("/a")).content == b"ok"
        assert client.get(server.url("/b")).content == b"ok"  # pre-emptive, stale, retried
    assert len(server.received) <= 5


async def test_async_event_hooks_are_awaited(scripted_server: ServerFactory) -> None:
    server = scripted_server(redirector)
    seen: list[str] = []

    async def on_request(request: poolhttp.Request) -> None:
        seen.append(f"> {request.url.path}")

    async def on_response(response: poolhttp.Response) -> None:
        seen.append(f"< {response.status_code}")

    hooks: dict[str, list[Any]] = {"request": [on_request], "response": [on_response]}
    async with poolhttp.AsyncClient(follow_redirects=True, event_hooks=hooks) as client:
        await client.get(server.url("/r/307/echo"))
    assert seen == ["> /r/307/echo", "< 307", "> /echo", "< 200"]


def test_default_headers_can_be_removed(client_kind: str,
                                        scripted_server: ServerFactory) -> None:
    server = scripted_server(lambda request: Reply.ok(
        ",".join(sorted(name.lower() for name, _ in request.headers)).encode()))
    with make_client(client_kind) as client:
        assert client.get(server.url("/")).content == b"accept,accept-encoding,host,user-agent"
        for name in ("Accept-Encoding", "User-Agent", "Accept"):
            del client.headers[name]
        assert client.get(server.url("/")).content == b"host"


def test_request_cookies_do_not_follow_to_another_origin(
        client_kind: str, scripted_server: ServerFactory) -> None:
    servers = scripted_server.multi(cookie_server)
    other = servers.url("/", 1)
    with make_client(client_kind, follow_redirects=True) as client:
        response = client.get(servers.url(f"/to-other?{other}", 0), cookies={"token": "t"})
    assert response.content == b"cookie=None"
    assert servers[0].received[0].get("cookie") == "token=t"


def set_cookie_edges(request: ReceivedRequest) -> Reply:
    if request.path == "/set":
        return Reply.ok(b"", headers=[
            ("Set-Cookie", "secure_only=1; Secure; Path=/"),
            ("Set-Cookie", "elsewhere=1; Domain=other.example; Path=/"),
            ("Set-Cookie", "short=1; Max-Age=1; Path=/"),
            ("Set-Cookie", "plain=1; Path=/")])
    return Reply.ok(f"cookie={request.get('cookie')}".encode())


def test_set_cookie_rules(client_kind: str, scripted_server: ServerFactory) -> None:
    """Secure cookies never go over plain http; a Domain the host does not belong to is
    refused; Max-Age expires."""
    server = scripted_server(set_cookie_edges)
    with make_client(client_kind) as client:
        client.get(server.url("/set"))
        sent = client.get(server.url("/")).content
        assert b"plain=1" in sent
        assert b"short=1" in sent
        assert b"secure_only" not in sent
        assert b"elsewhere" not in sent
        assert "elsewhere" not in client.cookies
        time.sleep(1.1)
        assert client.get(server.url("/")).content == b"cookie=plain=1"


def test_max_content_size_caps_a_decoded_body(client_kind: str,
                                              scripted_server: ServerFactory) -> None:
    body = gzip.compress(b"x" * 100_000)
    server = scripted_server(lambda request: Reply.ok(body,
                                                      headers={"Content-Encoding": "gzip"}))
    with make_client(client_kind, max_content_size=10_000) as client:
        response = client.get(server.url("/"))
        with pytest.raises(poolhttp.ResponseTooLarge):
            _ = response.content
    with make_client(client_kind) as client:
        assert len(client.get(server.url("/")).content) == 100_000
