"""Throw-away TLS material for the HTTPS tests: a private CA and one server certificate.

Nothing here touches the system trust store: clients trust the CA only when a test passes
`ca_path` (or `client_context()`) explicitly, so a verification bug cannot hide behind a CA
that happens to be installed on the machine.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["SERVER_NAMES", "CertBundle", "make_certs"]

# Every name the test servers are reached by: the DNS name and both loopback literals, so a
# test may use whichever form it is checking (hostname match or IP-address SAN match).
SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertBundle:
    """Paths of the PEM files written by `make_certs`."""

    directory: Path
    ca_path: Path  # the CA certificate: what a client passes as `verify=`
    cert_path: Path  # server certificate chain (leaf first)
    key_path: Path  # server private key
    names: tuple[str, ...]

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the throw-away CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the generated certificate (TLS 1.2 and 1.3)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        context.set_alpn_protocols(["http/1.1"])
        return context


def make_certs(directory: Path, names: tuple[str, ...] = SERVER_NAMES) -> CertBundle:
    """Create a new CA and a server certificate for `names`, written as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(*names)
    bundle = CertBundle(
        directory=directory,
        ca_path=directory / "ca.pem",
        cert_path=directory / "server-chain.pem",
        key_path=directory / "server-key.pem",
        names=names,
    )
    ca.cert_pem.write_to_path(str(bundle.ca_path))
    leaf.private_key_pem.write_to_path(str(bundle.key_path))
    # The chain file must hold the leaf followed by any intermediates, in that order.
    bundle.cert_path.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    return bundle
