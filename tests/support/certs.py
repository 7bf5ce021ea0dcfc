"""Throw-away TLS material for the HTTPS tests: a private CA and one server certificate, and
a second CA with a client certificate for mutual TLS.

Nothing here touches the system trust store: clients trust the CA only when a test passes
`ca_path` (or `client_context()`) explicitly, so a verification bug cannot hide behind a CA
that happens to be installed on the machine.

Client certificates come from a CA of their own (`client_ca_path`), which is what a server
requiring them trusts; the server CA does not sign them, and the client CA signs no server
certificate. The server certificate (signed by the server CA) therefore doubles as a client
certificate such a server must refuse: `untrusted_client_cert_path` / `untrusted_client_key_path`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

__all__ = ["CLIENT_IDENTITY", "SERVER_NAMES", "CertBundle", "make_certs"]

# Every name the test servers are reached by: the DNS name and both loopback literals, so a
# test may use whichever form it is checking (hostname match or IP-address SAN match).
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")

# The client certificate's subject (common name) and its single SAN (an e-mail address).
CLIENT_IDENTITY = "poolhttp-test-client"
CLIENT_EMAIL = "client@poolhttp.test"


@dataclass(frozen=True)
class CertBundle:
    """Paths of the PEM files written by `make_certs`."""

    directory: Path
    ca_path: Path  # the CA certificate: what a client passes as `verify=`
    cert_path: Path  # server certificate chain (leaf first)
    key_path: Path  # server private key
    names: tuple[str, ...]
    # Mutual TLS. The client certificate is signed by the client CA, not by `ca_path`.
    client_ca_path: Path  # what a server requiring client certificates trusts
    client_cert_path: Path  # client certificate chain (leaf first)
    client_key_path: Path  # its private key, unencrypted
    client_encrypted_key_path: Path  # the same key, encrypted with `client_key_password`
    client_key_password: str
    client_pem_path: Path  # certificate chain and unencrypted key in one file
    client_common_name: str  # the client certificate's subject CN

    @property
    def untrusted_client_cert_path(self) -> Path:
        """A certificate the client CA did not sign (the server's own): a server requiring
        client certificates must refuse it."""
        return self.cert_path

    @property
    def untrusted_client_key_path(self) -> Path:
        return self.key_path

    def client_context(self, *, with_client_cert: bool = False) -> ssl.SSLContext:
        """A verifying client context that trusts only the throw-away CA; with
        `with_client_cert`, it also presents the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        if with_client_cert:
            context.load_cert_chain(str(self.client_cert_path), str(self.client_key_path))
        return context

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the generated certificate (TLS 1.2 and 1.3)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        context.set_alpn_protocols(["http/1.1"])
        return context

    def mtls_server_context(self) -> ssl.SSLContext:
        """`server_context()` that also requires a client certificate signed by the client CA.

        Unlike nginx (which completes the handshake and answers 400), OpenSSL here aborts the
        handshake without one: in TLS 1.2 the client's handshake fails, in TLS 1.3 (where the
        client finishes first) its first read does. Pass it as `tls=` to a scripted server.
        """
        context = self.server_context()
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(self.client_ca_path))
        return context


def make_certs(directory: Path, names: tuple[str, ...] = SERVER_NAMES) -> CertBundle:
    """Create a new CA and a server certificate for `names`, and a client CA with one client
    certificate, written as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    client_ca = trustme.CA(organization_unit_name="poolhttp test client CA")
    client = client_ca.issue_cert(CLIENT_EMAIL, common_name=CLIENT_IDENTITY)
    password = "client-key-password"
    bundle = CertBundle(
        directory=directory,
        ca_path=directory / "ca.pem",
        cert_path=directory / "server-chain.pem",
        key_path=directory / "server-key.pem",
        names=names,
        client_ca_path=directory / "client-ca.pem",
        client_cert_path=directory / "client-chain.pem",
        client_key_path=directory / "client-key.pem",
        client_encrypted_key_path=directory / "client-key-encrypted.pem",
        client_key_password=password,
        client_pem_path=directory / "client-cert-and-key.pem",
        client_common_name=CLIENT_IDENTITY,
    )
    ca.cert_pem.write_to_path(str(bundle.ca_path))
    leaf.private_key_pem.write_to_path(str(bundle.key_path))
    # The chain file must hold the leaf followed by any intermediates, in that order.
    bundle.cert_path.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))

    client_ca.cert_pem.write_to_path(str(bundle.client_ca_path))
    client_chain = b"".join(pem.bytes() for pem in client.cert_chain_pems)
    client_key = client.private_key_pem.bytes()
    bundle.client_cert_path.write_bytes(client_chain)
    bundle.client_key_path.write_bytes(client_key)
    bundle.client_pem_path.write_bytes(client_chain + client_key)
    key = serialization.load_pem_private_key(client_key, password=None)
    bundle.client_encrypted_key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
    )
    return bundle
