"""TLS from the client's side: client certificates (cert=), session resumption seen in
nginx's log ($ssl_session_reused), and Unix sockets (uds=)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import poolhttp
from tests.integration.clients import make_client
from tests.support.certs import CertBundle
from tests.support.nginx import Nginx


# -- client certificates ----------------------------------------------------------------------
def cert_forms(certs: CertBundle) -> dict[str, object]:
    return {
        "pem": str(certs.client_pem_path),
        "pair": (str(certs.client_cert_path), str(certs.client_key_path)),
        "encrypted": (str(certs.client_cert_path), str(certs.client_encrypted_key_path),
                      certs.client_key_password),
    }


@pytest.mark.parametrize("form", ["pem", "pair", "encrypted"])
def test_a_client_certificate_is_presented(client_kind: str, nginx: Nginx,
                                           certs: CertBundle, form: str) -> None:
    with make_client(client_kind, verify=nginx.ca_path,
                     cert=cert_forms(certs)[form]) as client:
        response = client.get(nginx.mtls_url("/client-cert"))
    assert response.status_code == 200
    assert response.text.startswith("SUCCESS")
    assert certs.client_common_name in response.text


def test_without_a_certificate_the_server_refuses(client_kind: str, nginx: Nginx) -> None:
    with make_client(client_kind, verify=nginx.ca_path) as client:
        response = client.get(nginx.mtls_url("/client-cert"))
    # nginx completes the handshake and answers 400 (see tests/support/nginx.py).
    assert response.status_code == 400
    assert "No required SSL certificate was sent" in response.text


def test_connections_with_and_without_a_certificate_are_never_shared(
        client_kind: str, nginx: Nginx, certs: CertBundle) -> None:
    with make_client(client_kind, verify=nginx.ca_path) as plain, \
            make_client(client_kind, verify=nginx.ca_path,
                        cert=cert_forms(certs)["pair"]) as with_cert:
        assert plain.get(nginx.mtls_url("/client-cert")).status_code == 400
        assert with_cert.get(nginx.mtls_url("/client-cert")).status_code == 200
        assert plain.get(nginx.mtls_url("/client-cert")).status_code == 400


@pytest.mark.parametrize(("cert", "error", "words"), [
    ("/nonexistent/client.pem", FileNotFoundError, "/nonexistent/client.pem"),
    (("a", "b", "c", "d"), TypeError, "(certfile, keyfile"),
    (42, TypeError, "cert must be a path"),
])
def test_a_bad_cert_is_refused_at_construction(cert: object, error: type[Exception],
                                               words: str) -> None:
    for client_class in (poolhttp.Client, poolhttp.AsyncClient):
        with pytest.raises(error) as caught:
            client_class(cert=cert)  # type: ignore[arg-type]
        assert words in str(caught.value)


def test_a_wrong_key_password_is_refused_without_showing_it(certs: CertBundle) -> None:
    for client_class in (poolhttp.Client, poolhttp.AsyncClient):
        with pytest.raises(ValueError, match="cannot load the client certificate") as caught:
            client_class(cert=(str(certs.client_cert_path),
                               str(certs.client_encrypted_key_path), "hunter2"))
        assert "wrong password?" in str(caught.value)
        assert "hunter2" not in str(caught.value)
        with pytest.raises(ValueError, match="needs its password"):
            client_class(cert=(str(certs.client_cert_path),
                               str(certs.client_encrypted_key_path)))


def test_cert_with_an_ssl_context_is_refused(certs: CertBundle) -> None:
    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="load_cert_chain"):
        poolhttp.Client(verify=context, cert=str(certs.client_pem_path))


# -- session resumption ------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_new_connections_resume_the_tls_session(client_kind: str, nginx: Nginx,
                                                certs: CertBundle, version: str) -> None:
    context = ssl.create_default_context(cafile=nginx.ca_path)
    context.maximum_version = ssl.TLSVersion[version.replace(".", "_").replace("v", "v")]
    start = len(nginx.session_log())
    with make_client(client_kind, verify=context) as client:
        for _ in range(20):
            assert client.get(nginx.resume_url("/", keepalive=False)).status_code == 200
        stats = client.stats()
    entries = nginx.wait_for_session_log(lambda log: len(log) >= start + 20)[start:]
    assert [entry.protocol for entry in entries] == [version] * 20
    assert len({entry.connection for entry in entries}) == 20  # each on a new connection
    assert [entry.reused for entry in entries] == [False] + [True] * 19
    assert stats.tls_resumed == 19
    assert stats.created == 20


def test_resumption_can_be_turned_off(client_kind: str, nginx: Nginx) -> None:
    start = len(nginx.session_log())
    with make_client(client_kind, verify=nginx.ca_path, tls_resumption=False) as client:
        for _ in range(5):
            assert client.get(nginx.resume_url("/", keepalive=False)).status_code == 200
        assert client.stats().tls_resumed == 0
    entries = nginx.wait_for_session_log(lambda log: len(log) >= start + 5)[start:]
    assert [entry.reused for entry in entries] == [False] * 5


def test_the_trace_says_when_a_handshake_resumed(client_kind: str, nginx: Nginx) -> None:
    events: list[tuple[str, dict[str, object]]] = []
    with make_client(client_kind, verify=nginx.ca_path,
                     trace=lambda event, info: events.append((event, info))) as client:
        for _ in range(3):
            client.get(nginx.resume_url("/", keepalive=False))
    handshakes = [info for event, info in events if event == "tls.handshake"]
    assert [info["resumed"] for info in handshakes] == [False, True, True]
    assert all(info["version"] == "TLSv1.3" for info in handshakes)


# -- Unix sockets ------------------------------------------------------------------------------
def test_uds_carries_every_request_with_the_url_host(client_kind: str, nginx: Nginx) -> None:
    start = len(nginx.uds_log())
    with make_client(client_kind, uds=nginx.uds_path) as client:
        first = client.get("http://docker.test/16k")
        second = client.get("http://other.test:8080/")
        stats = client.stats()
    assert first.content == nginx.file_bytes("16k")
    assert second.status_code == 200
    entries = nginx.wait_for_uds_log(lambda log: len(log) >= start + 2)[start:]
    assert [entry.http_host for entry in entries] == ["docker.test", "other.test:8080"]
    assert stats.created == 2  # one connection per origin: each is its own pool key


def test_uds_that_is_missing_is_a_connect_error(client_kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / "nothing.sock")
    with (make_client(client_kind, uds=path) as client,
          pytest.raises(poolhttp.ConnectError) as caught):
        client.get("http://docker.test/")
    assert str(caught.value) == (f"cannot connect to http://docker.test:80 through the Unix "
                                 f"socket {path}: No such file or directory")


def test_uds_argument_errors() -> None:
    with pytest.raises(TypeError, match="uds must be the path"):
        poolhttp.Client(uds=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exclude each other"):
        poolhttp.AsyncClient(uds="/tmp/x.sock", proxy="http://127.0.0.1:3128")


# -- the truststore recipe --------------------------------------------------------------------
def test_a_truststore_context_is_used_as_verify(client_kind: str, nginx: Nginx) -> None:
    import truststore

    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with (make_client(client_kind, verify=context) as client,
          pytest.raises(poolhttp.ConnectError, match="not trusted")):
        client.get(nginx.https_url())  # the test CA is in no system store
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(nginx.ca_path)
    with make_client(client_kind, verify=context) as client:
        assert client.get(nginx.https_url()).status_code == 200
