"""Everyday HTTP semantics against a server nobody here wrote: httpbin under gunicorn, over
HTTP and HTTPS, on the blocking client and the async one (asyncio and uvloop)."""

from __future__ import annotations

import io
from typing import Any

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.httpbin import Httpbin


@pytest.fixture(params=["http", "https"])
def base(request: pytest.FixtureRequest, httpbin: Httpbin) -> str:
    return httpbin.url("") if request.param == "http" else httpbin.https_url("")


@pytest.fixture
def client(client_kind: str, httpbin: Httpbin) -> Any:
    with make_client(client_kind, verify=httpbin.ca_path, follow_redirects=True) as client:
        yield client


def test_redirect_chains(client: Any, base: str) -> None:
    response = client.get(f"{base}/redirect/3")
    assert response.status_code == 200
    assert len(response.history) == 3
    assert response.json()["url"] == f"{base}/get"
    relative = client.get(f"{base}/relative-redirect/2")
    assert [r.status_code for r in relative.history] == [302, 302]
    absolute = client.get(f"{base}/absolute-redirect/1")
    assert absolute.json()["url"] == f"{base}/get"


@pytest.mark.parametrize(("status", "method"), [(302, "GET"), (303, "GET"), (307, "POST"),
                                                (308, "POST")])
def test_redirect_methods(client: Any, base: str, status: int, method: str) -> None:
    target = f"{base}/anything"
    response = client.post(f"{base}/redirect-to",
                           params={"url": target, "status_code": status}, data={"k": "v"})
    body = response.json()
    assert body["method"] == method
    assert body["form"] == ({"k": "v"} if method == "POST" else {})


def test_too_many_redirects(client: Any, base: str) -> None:
    with pytest.raises(poolhttp.TooManyRedirects, match="21 redirects in a row"):
        client.get(f"{base}/redirect/25")  # max_redirects=20 by default


def test_cookies_round_trip(client: Any, base: str) -> None:
    response = client.get(f"{base}/cookies/set", params={"flavour": "oat", "size": "2"})
    assert response.json()["cookies"] == {"flavour": "oat", "size": "2"}
    assert client.cookies["flavour"] == "oat"
    assert client.get(f"{base}/cookies").json()["cookies"] == {"flavour": "oat", "size": "2"}
    client.get(f"{base}/cookies/delete", params={"size": ""})
    assert client.get(f"{base}/cookies").json()["cookies"] == {"flavour": "oat"}


def test_basic_auth(client: Any, base: str) -> None:
    assert client.get(f"{base}/basic-auth/ada/pw").status_code == 401
    assert client.get(f"{base}/basic-auth/ada/pw", auth=("ada", "pw")).json() == {
        "authenticated": True, "user": "ada"}
    userinfo = base.replace("://", "://ada:pw@")
    assert client.get(f"{userinfo}/basic-auth/ada/pw").status_code == 200


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_auth(client: Any, base: str, algorithm: str) -> None:
    url = f"{base}/digest-auth/auth/ada/pw/{algorithm}"
    response = client.get(url, auth=poolhttp.DigestAuth("ada", "pw"))
    assert response.status_code == 200
    assert response.json() == {"authenticated": True, "user": "ada"}
    wrong = client.get(url, auth=poolhttp.DigestAuth("ada", "nope"))
    assert wrong.status_code == 401


def test_files_with_form_fields(client: Any, base: str) -> None:
    files = {"report": ("report.csv", io.BytesIO(b"a,b\n1,2\n"), "text/csv"),
             "raw": b"\x00\x01"}
    response = client.post(f"{base}/post", data={"title": "q3"}, files=files)
    body = response.json()
    assert body["form"] == {"title": "q3"}
    assert body["files"]["report"] == "a,b\n1,2\n"
    assert body["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")
    # Every part's size is known (bytes, a seekable file): a Content-Length, not chunked.
    assert int(body["headers"]["Content-Length"]) > 0
    assert "Transfer-Encoding" not in body["headers"]


def test_event_hooks_see_every_hop(client_kind: str, httpbin: Httpbin) -> None:
    seen: list[int] = []
    with make_client(client_kind, follow_redirects=True,
                     event_hooks={"response": [lambda r: seen.append(r.status_code)]}) as c:
        c.get(httpbin.url("/redirect/2"))
    assert seen == [302, 302, 200]


def test_bad_combinations_are_named(client: Any, base: str) -> None:
    with pytest.raises(poolhttp.InvalidRequest, match="files= goes with data="):
        client.post(f"{base}/post", files={"f": b"x"}, json={"a": 1})


@pytest.mark.parametrize("coding", ["gzip", "deflate", "brotli"])
def test_compressed_bodies_come_back_decoded(client: Any, base: str, coding: str) -> None:
    response = client.get(f"{base}/{coding}")
    assert response.headers["content-encoding"] == {"brotli": "br"}.get(coding, coding)
    body = response.json()  # decoded: today it would be compressed bytes
    assert body[{"gzip": "gzipped", "deflate": "deflated"}.get(coding, coding)] is True


def test_accept_encoding_lists_what_we_decode(client: Any, base: str) -> None:
    sent = client.get(f"{base}/headers").json()["headers"]["Accept-Encoding"]
    assert sent == "gzip, deflate, br, zstd"  # brotli and zstandard are in the test extra


def test_streamed_lines(client: Any, base: str) -> None:
    with client.stream("GET", f"{base}/stream/5") as response:
        lines = [line for line in response.iter_lines() if line]
    assert len(lines) == 5
    assert all(line.startswith("{") for line in lines)
