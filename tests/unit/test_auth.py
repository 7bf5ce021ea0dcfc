"""Auth flows: Basic header values, Digest answers checked against RFC 7616's published
examples and against an implementation of the RFC's formulas written here, nonce counting,
stale nonces, and challenges that cannot be answered."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Callable, Iterator

import pytest

from poolhttp import InvalidRequest, Request, Response
from poolhttp._auth import (
    Auth,
    AuthError,
    AuthFlow,
    BasicAuth,
    DigestAuth,
    DigestChallenge,
    parse_challenges,
    parse_digest_challenges,
)

# RFC 7616 section 3.9.1
USER, PASSWORD = "Mufasa", "Circle of Life"
REALM = "http-auth@example.org"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
URL = "http://www.example.org/dir/index.html"
RFC_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def challenge_header(algorithm: str = "SHA-256", nonce: str = NONCE, extra: str = "") -> str:
    return (f'Digest realm="{REALM}", qop="auth, auth-int", algorithm={algorithm}, '
            f'nonce="{nonce}", opaque="{OPAQUE}"{extra}')


def unauthorized(request: Request, *challenges: str) -> Response:
    return Response(401, headers=[("WWW-Authenticate", c) for c in challenges], request=request)


def ok(request: Request) -> Response:
    return Response(200, request=request)


def authorization_params(request: Request) -> dict[str, str]:
    """The parameters of a Digest Authorization header, parsed independently."""
    value = request.headers["Authorization"]
    assert value.startswith("Digest ")
    pairs = re.findall(r'([a-z]+\*?)=("(?:[^"\\]|\\.)*"|[^,\s]+)(?:, |$)', value[7:])
    assert ", ".join(f"{k}={v}" for k, v in pairs) == value[7:]
    return {k: re.sub(r"\\(.)", r"\1", v[1:-1]) if v.startswith('"') else v for k, v in pairs}


def finish(flow: AuthFlow, response: Response) -> None:
    with pytest.raises(StopIteration):
        flow.send(response)


# -- an implementation of RFC 7616 section 3.4.1, for comparison ------------------------------


def expected_response(algorithm: str, *, method: str, uri: str, nonce: str, nc: str,
                      cnonce: str, qop: str | None, username: str = USER,
                      password: str = PASSWORD, realm: str = REALM) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[
        algorithm.upper().replace("-SESS", "")]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8")).hexdigest()

    a1 = f"{username}:{realm}:{password}"
    if algorithm.upper().endswith("-SESS"):
        a1 = f"{h(a1)}:{nonce}:{cnonce}"
    a2 = f"{method}:{uri}"
    if qop is None:  # RFC 2069
        return h(f"{h(a1)}:{nonce}:{h(a2)}")
    return h(f"{h(a1)}:{nonce}:{nc}:{cnonce}:{qop}:{h(a2)}")


def fixed_cnonce() -> str:
    return CNONCE


# -- the base class --------------------------------------------------------------------------


def test_base_auth_sends_the_request_unchanged() -> None:
    request = Request("GET", URL)
    flow = Auth().auth_flow(request)
    assert next(flow) is request
    assert "authorization" not in request.headers
    finish(flow, ok(request))
    assert Auth.requires_response_body is False


# -- Basic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("username", "password", "expected"), [
    ("Aladdin", "open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),  # RFC 7617 section 2
    ("test", "123£", "dGVzdDoxMjPCow=="),  # RFC 7617 section 2.1: UTF-8
    ("", "", "Og=="),
    (b"caf\xe9", b"x", base64.b64encode(b"caf\xe9:x").decode()),  # bytes as given
])
def test_basic_header(username: str | bytes, password: str | bytes, expected: str) -> None:
    auth = BasicAuth(username, password)
    request = Request("GET", URL)
    flow = auth.auth_flow(request)
    assert next(flow) is request
    assert request.headers["Authorization"] == f"Basic {expected}"
    finish(flow, unauthorized(request, 'Basic realm="x"'))  # a 401 is returned as it is


def test_basic_replaces_an_authorization_header() -> None:
    request = Request("GET", URL, headers={"Authorization": "Bearer old"})
    next(BasicAuth("a", "b").auth_flow(request))
    assert request.headers.get_list("Authorization") == ["Basic YTpi"]


@pytest.mark.parametrize(("username", "password", "message"), [
    ("a:b", "c", "cannot contain ':'"),
    ("a\r\n", "c", "control character"),
    ("a", "c\x00", "control character"),
    (3, "c", "must be str or bytes"),
])
def test_basic_refuses_bad_credentials(username: object, password: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        BasicAuth(username, password)  # type: ignore[arg-type]


def test_repr_hides_the_password() -> None:
    for auth in (BasicAuth("user", "s3cret-pw"), DigestAuth("user", "s3cret-pw")):
        assert "s3cret-pw" not in repr(auth)
        assert "user" in repr(auth)
        assert "hidden" in repr(auth)


# -- Digest: the RFC's example ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc_7616_example(algorithm: str) -> None:
    auth = DigestAuth(USER, PASSWORD, cnonce=fixed_cnonce)
    request = Request("GET", URL)
    flow = auth.auth_flow(request)
    assert "authorization" not in next(flow).headers
    again = flow.send(unauthorized(request, challenge_header(algorithm)))
    assert again is request
    params = authorization_params(request)
    assert params == {
        "username": USER, "realm": REALM, "uri": "/dir/index.html", "algorithm": algorithm,
        "nonce": NONCE, "nc": "00000001", "cnonce": CNONCE, "qop": "auth",
        "response": RFC_RESPONSES[algorithm], "opaque": OPAQUE,
    }
    assert params["response"] == expected_response(
        algorithm, method="GET", uri="/dir/index.html", nonce=NONCE, nc="00000001",
        cnonce=CNONCE, qop="auth")
    finish(flow, ok(request))


ALGORITHMS = ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"] + (
    ["SHA-512-256", "SHA-512-256-sess"] if "sha512_256" in hashlib.algorithms_available else [])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("qop", ['qop="auth"', 'qop="auth-int,auth"', None])
def test_every_algorithm_matches_the_formulas(algorithm: str, qop: str | None) -> None:
    auth = DigestAuth("üser", "pässword", cnonce=lambda: "c-nonce")
    request = Request("POST", "https://example.org:8443/a/b?x=1&y=%20")
    flow = auth.auth_flow(request)
    next(flow)
    params = ", ".join(filter(None, ['realm="r@e"', 'nonce="n0nce"', f"algorithm={algorithm}",
                                     qop]))
    flow.send(unauthorized(request, f"Digest {params}"))
    sent = authorization_params(request)
    assert sent["uri"] == "/a/b?x=1&y=%20"
    assert sent["algorithm"] == algorithm
    assert sent["username*"] == "UTF-8''%C3%BCser"
    expected = expected_response(
        algorithm, method="POST", uri="/a/b?x=1&y=%20", nonce="n0nce", nc="00000001",
        cnonce="c-nonce", qop=None if qop is None else "auth", username="üser",
        password="pässword", realm="r@e")
    assert sent["response"] == expected
    if qop is None:
        assert {"nc", "cnonce", "qop"}.isdisjoint(sent)
    else:
        assert (sent["nc"], sent["cnonce"], sent["qop"]) == ("00000001", "c-nonce", "auth")


def test_quotes_in_names_are_escaped() -> None:
    auth = DigestAuth('a"b\\c', "pw", cnonce=fixed_cnonce)
    request = Request("GET", URL)
    flow = auth.auth_flow(request)
    next(flow)
    flow.send(unauthorized(request, r'Digest realm="r\"q", nonce="n", qop=auth'))
    sent = authorization_params(request)
    assert (sent["username"], sent["realm"]) == ('a"b\\c', 'r"q')
    assert sent["response"] == expected_response(
        "MD5", method="GET", uri="/dir/index.html", nonce="n", nc="00000001", cnonce=CNONCE,
        qop="auth", username='a"b\\c', password="pw", realm='r"q')


# -- Digest: nonce counts and remembered challenges ---------------------------------------------


def run(auth: Auth, url: str, answer: Callable[[Request, int], Response]) -> list[Request]:
    """Drive one flow; `answer(request, attempt)` plays the server. Returns what was sent,
    as copies of the headers at the time of sending."""
    request = Request("GET", url)
    flow = auth.auth_flow(request)
    sent = [next(flow)]
    snapshots = [dict(request.headers)]
    while True:
        try:
            sent.append(flow.send(answer(sent[-1], len(sent))))
        except StopIteration:
            break
        snapshots.append(dict(request.headers))
        assert len(sent) < 10
    return [Request("GET", url, headers=snapshot) for snapshot in snapshots]


def server(nonce: str = NONCE, *, stale_until: int = 0) -> Callable[[Request, int], Response]:
    """A 401 with a challenge for a request without (or with a stale) Authorization."""

    def answer(request: Request, attempt: int) -> Response:
        if "authorization" not in request.headers or attempt <= stale_until:
            stale = ", stale=true" if "authorization" in request.headers else ""
            return unauthorized(request, challenge_header(nonce=nonce, extra=stale))
        return ok(request)

    return answer


def test_nonce_count_increments_across_requests() -> None:
    auth = DigestAuth(USER, PASSWORD)
    first = run(auth, URL, server())
    assert len(first) == 2
    assert authorization_params(first[1])["nc"] == "00000001"
    counts, cnonces = [], set()
    for path in ("/dir/index.html", "/other", "/third?q"):
        [only] = run(auth, "http://www.example.org" + path, server())  # answered at once
        params = authorization_params(only)
        counts.append(params["nc"])
        cnonces.add(params["cnonce"])
        assert params["uri"] == path
        assert params["nonce"] == NONCE
    assert counts == ["00000002", "00000003", "00000004"]
    assert len(cnonces) == 3


def test_another_origin_is_not_answered_in_advance() -> None:
    auth = DigestAuth(USER, PASSWORD)
    run(auth, URL, server())
    sent = run(auth, "http://other.example.org/", server())
    assert "authorization" not in sent[0].headers
    assert authorization_params(sent[1])["nc"] == "00000001"
    assert authorization_params(run(auth, URL, server())[0])["nc"] == "00000002"


def test_a_new_nonce_starts_counting_again() -> None:
    auth = DigestAuth(USER, PASSWORD)
    run(auth, URL, server("first"))
    run(auth, URL, server("first"))

    def new_nonce(request: Request, attempt: int) -> Response:
        if authorization_params(request)["nonce"] == "first":
            return unauthorized(request, challenge_header(nonce="second", extra=", stale=TRUE"))
        return ok(request)

    sent = run(auth, URL, new_nonce)
    assert [authorization_params(r)["nc"] for r in sent] == ["00000003", "00000001"]
    assert authorization_params(sent[1])["nonce"] == "second"
    assert authorization_params(run(auth, URL, server("second"))[0])["nc"] == "00000002"


def test_nonce_counts_are_unique_across_threads() -> None:
    auth = DigestAuth(USER, PASSWORD)
    run(auth, URL, server())
    counts: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            [request] = run(auth, URL, server())
            with lock:
                counts.append(authorization_params(request)["nc"])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == [f"{n:08x}" for n in range(2, 402)]


# -- Digest: stale nonces and refusals ------------------------------------------------------


def test_stale_nonce_is_retried_once() -> None:
    auth = DigestAuth(USER, PASSWORD)
    sent = run(auth, URL, server(stale_until=2))  # 401, 401 stale, then 200
    assert len(sent) == 3
    assert [authorization_params(r)["nc"] for r in sent[1:]] == ["00000001", "00000002"]


def test_stale_twice_is_returned() -> None:
    auth = DigestAuth(USER, PASSWORD)
    statuses: list[int] = []

    def always_stale(request: Request, attempt: int) -> Response:
        response = server(stale_until=99)(request, attempt)
        statuses.append(response.status_code)
        return response

    sent = run(auth, URL, always_stale)
    assert len(sent) == 3  # no header, answer, one stale retry; then the 401 is returned
    assert statuses == [401, 401, 401]


def test_stale_after_a_preemptive_answer() -> None:
    auth = DigestAuth(USER, PASSWORD)
    run(auth, URL, server("old"))

    def expired(request: Request, attempt: int) -> Response:
        if authorization_params(request)["nonce"] == "old":
            return unauthorized(request, challenge_header(nonce="new", extra=", stale=true"))
        return ok(request)

    sent = run(auth, URL, expired)
    assert [authorization_params(r)["nonce"] for r in sent] == ["old", "new"]


def test_wrong_credentials_return_the_401() -> None:
    def refuse(request: Request, attempt: int) -> Response:
        return unauthorized(request, challenge_header())

    sent = run(DigestAuth(USER, "wrong"), URL, refuse)
    assert len(sent) == 2


@pytest.mark.parametrize("headers", [[], ['Basic realm="x"'], ["Bearer", 'Negotiate abc==']])
def test_a_401_without_digest_is_returned(headers: list[str]) -> None:
    request = Request("GET", URL)
    flow = DigestAuth(USER, PASSWORD).auth_flow(request)
    next(flow)
    finish(flow, unauthorized(request, *headers))


def test_success_without_a_challenge() -> None:
    request = Request("GET", URL)
    flow = DigestAuth(USER, PASSWORD).auth_flow(request)
    next(flow)
    finish(flow, Response(200, request=request))


@pytest.mark.parametrize(("header", "message"), [
    ('Digest realm="x"', "needs a realm and a nonce"),
    ('Digest nonce="x"', "needs a realm and a nonce"),
    ('Digest realm="x", nonce="y", algorithm=SHA-1', "unsupported Digest algorithm 'SHA-1'"),
    ('Digest realm="x", nonce="y", qop="auth-int"', "unsupported qop 'auth-int'"),
    ('Digest realm="unterminated, nonce="y', "malformed WWW-Authenticate"),
    ('Digest realm="x", realm="y", nonce="z"', "appears twice"),
    ('Digest realm="x" nonce="y"', "malformed"),
])
def test_a_challenge_that_cannot_be_answered_raises(header: str, message: str) -> None:
    request = Request("GET", URL)
    flow = DigestAuth(USER, PASSWORD).auth_flow(request)
    next(flow)
    response = unauthorized(request, header)
    with pytest.raises(AuthError, match=re.escape(message)) as caught:
        flow.send(response)
    assert caught.value.response is response
    assert caught.value.origin == "http://www.example.org:80"
    assert PASSWORD not in str(caught.value)


def test_the_first_usable_challenge_is_answered() -> None:
    request = Request("GET", URL)
    flow = DigestAuth(USER, PASSWORD, cnonce=fixed_cnonce).auth_flow(request)
    next(flow)
    flow.send(unauthorized(
        request, 'Basic realm="b", Digest realm="x", nonce="y", algorithm=SHA-1',
        challenge_header("SHA-256"), challenge_header("MD5")))
    assert authorization_params(request)["response"] == RFC_RESPONSES["SHA-256"]


# -- the challenge parser ------------------------------------------------------------------


def test_parse_challenges() -> None:
    assert parse_challenges(
        'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"'
    ) == [("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
          ("basic", {"realm": "simple"})]
    assert parse_challenges("Bearer, Negotiate YII=, DIGEST Realm = r , NONCE=n") == [
        ("bearer", {}), ("negotiate", {"": "YII="}), ("digest", {"realm": "r", "nonce": "n"})]
    assert parse_challenges("") == []


def test_parse_digest_challenges() -> None:
    [challenge] = parse_digest_challenges([challenge_header("sha-256-SESS", extra=", stale=1")])
    assert challenge == DigestChallenge(REALM, NONCE, "SHA-256-sess", "auth", OPAQUE, False)
    assert parse_digest_challenges(['Basic realm="x', "Bearer"]) == []
    [error] = parse_digest_challenges(['Digest realm="x'])
    assert isinstance(error, ValueError)


def _all_flows() -> Iterator[Auth]:
    yield BasicAuth("a", "b")
    yield DigestAuth("a", "b")


def test_flows_do_not_need_response_bodies() -> None:
    assert not any(auth.requires_response_body for auth in _all_flows())
