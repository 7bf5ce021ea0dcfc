"""`poolhttp get` flags against real servers over real sockets, the command as a child process.

-f and -o as curl has them (nothing written for an error status, no file made for a request
that got no response to write), -L with --max-redirs (httpbin's redirect chains, and a
redirect to another origin), -k and --cacert (nginx's HTTPS with the session's throw-away CA),
--http2 and --http2-prior-knowledge (nginx by ALPN, and hypercorn, whose /echo tells which
protocol the server really spoke), and the refusals of bad flags: exit status 2, a message
naming the flag, nothing sent.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from poolhttp.cli._get import Timings
from tests.support.certs import CertBundle
from tests.support.httpbin import Httpbin
from tests.support.hypercorn import Hypercorn
from tests.support.nginx import Nginx

from .helpers import cli_env, run_cli

TEAPOT = "teapot"  # in the body of httpbin's /status/418


def status_lines(stderr: str) -> list[str]:
    """The response status lines of -v, one per hop."""
    return [line[2:] for line in stderr.splitlines() if line.startswith("< HTTP/")]


# -- -f and -o ------------------------------------------------------------------------------


def test_an_error_status_without_fail_is_written(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/status/418")])
    assert done.returncode == 0, done.stderr
    assert TEAPOT in done.stdout  # so the -f tests below see a body that could be written


@pytest.mark.parametrize("flags", [["-f"], ["-f", "-i"], ["--fail", "-v"]])
def test_fail_writes_nothing_of_an_error_status_and_exits_22(httpbin: Httpbin,
                                                             flags: list[str]) -> None:
    done = run_cli(["get", httpbin.url("/status/418"), *flags])
    assert done.returncode == 22
    assert done.stdout == ""  # not the body, and not the head of -i either
    assert "418" in done.stderr
    assert TEAPOT not in done.stderr


def test_fail_lets_a_success_through(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/get?probe=1"), "-f"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["args"] == {"probe": "1"}


def test_fail_with_output_leaves_the_file_alone(httpbin: Httpbin, tmp_path: Path) -> None:
    new = tmp_path / "new.txt"
    done = run_cli(["get", httpbin.url("/status/418"), "-f", "-o", str(new)])
    assert done.returncode == 22
    assert not new.exists()
    kept = tmp_path / "kept.txt"
    kept.write_text("earlier download\n")
    assert run_cli(["get", httpbin.url("/status/500"), "-f", "-o", str(kept)]).returncode == 22
    assert kept.read_text() == "earlier download\n"


def test_output_gets_the_body_byte_for_byte_and_stdout_nothing(nginx: Nginx,
                                                               tmp_path: Path) -> None:
    target = tmp_path / "16k"
    done = run_cli(["get", nginx.url("/16k"), "-o", str(target)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert target.read_bytes() == nginx.file_bytes("16k")


def test_output_with_include_puts_the_head_in_the_file(nginx: Nginx, tmp_path: Path) -> None:
    target = tmp_path / "with-head"
    target.write_bytes(b"x" * 100_000)  # longer than the new content: it must be truncated
    done = run_cli(["get", nginx.url("/"), "-i", "-o", str(target)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    head, _, body = target.read_bytes().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nContent-Length: 6" in head
    assert body == b"hello\n"


def test_output_dash_is_standard_output(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.url("/"), "-o", "-"])
    assert (done.returncode, done.stdout) == (0, "hello\n")


def test_a_failed_request_creates_no_output_file(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        target = tmp_path / "out"
        done = run_cli(["get", url, "-o", str(target)])
    assert done.returncode == 1
    assert "ConnectError" in done.stderr
    assert not target.exists()


@pytest.mark.parametrize(("where", "message"), [
    ("DIR", "is a directory"),
    ("DIR/missing/out", "no such directory"),
])
def test_output_that_cannot_be_written_is_refused_before_sending(
        nginx: Nginx, tmp_path: Path, where: str, message: str) -> None:
    before = nginx.server_stats()
    done = run_cli(["get", nginx.url("/"), "-o", where.replace("DIR", str(tmp_path))])
    assert done.returncode == 2
    assert f"poolhttp get: -o {tmp_path}" in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert nginx.server_stats().since(before).requests == 0


# -- -L and --max-redirs --------------------------------------------------------------------


def test_redirects_are_not_followed_without_location(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/redirect/3"), "-v"])
    assert done.returncode == 0, done.stderr
    assert status_lines(done.stderr) == ["HTTP/1.1 302 FOUND"]
    assert "* redirect" not in done.stderr


def test_location_follows_the_chain_and_verbose_shows_every_hop(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/redirect/3"), "-L", "-v"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["url"] == httpbin.url("/get")
    assert status_lines(done.stderr) == ["HTTP/1.1 302 FOUND"] * 3 + ["HTTP/1.1 200 OK"]
    hops = [line for line in done.stderr.splitlines() if line.startswith("* redirect ")]
    assert hops == [f"* redirect 1: GET {httpbin.url('/relative-redirect/2')}",
                    f"* redirect 2: GET {httpbin.url('/relative-redirect/1')}",
                    f"* redirect 3: GET {httpbin.url('/get')}"]
    assert "> GET /relative-redirect/1 HTTP/1.1" in done.stderr
    assert "* redirects   3" in done.stderr
    assert "* protocol    HTTP/1.1" in done.stderr


def test_location_with_include_writes_the_head_of_every_hop(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/redirect/2"), "-L", "-i"])
    assert done.returncode == 0, done.stderr
    starts = [line for line in done.stdout.split("\r\n") if line.startswith("HTTP/1.1 ")]
    assert starts == ["HTTP/1.1 302 FOUND"] * 2 + ["HTTP/1.1 200 OK"]
    assert json.loads(done.stdout.rpartition("\r\n\r\n")[2])["url"] == httpbin.url("/get")


def test_location_to_another_origin(httpbin: Httpbin, nginx: Nginx) -> None:
    done = run_cli(["get", httpbin.url(f"/redirect-to?url={nginx.url('/')}"), "-L"])
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr


def test_location_and_fail_judge_the_last_hop(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/redirect-to?url=/status/404"), "-L", "-f"])
    assert done.returncode == 22
    assert done.stdout == ""
    assert "404" in done.stderr


def test_max_redirs_bounds_the_chain(httpbin: Httpbin) -> None:
    over = run_cli(["get", httpbin.url("/redirect/3"), "-L", "--max-redirs", "2"])
    assert over.returncode == 1
    assert over.stdout == ""
    assert "more than --max-redirs 2 redirects" in over.stderr
    assert "Traceback" not in over.stderr
    enough = run_cli(["get", httpbin.url("/redirect/3"), "-L", "--max-redirs", "3"])
    assert enough.returncode == 0, enough.stderr
    assert json.loads(enough.stdout)["url"] == httpbin.url("/get")


def test_max_redirs_zero_refuses_any_redirect(httpbin: Httpbin) -> None:
    done = run_cli(["get", httpbin.url("/redirect/1"), "-L", "--max-redirs", "0", "-v"])
    assert done.returncode == 1
    assert status_lines(done.stderr) == ["HTTP/1.1 302 FOUND"]  # -v still shows the hop
    assert "more than --max-redirs 0 redirects" in done.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-redirs", "3"], "--max-redirs limits the redirects that -L follows"),
    (["-L", "--max-redirs", "-1"], "--max-redirs: must be at least 0"),
    (["-L", "--max-redirs", "many"], "--max-redirs: expected a whole number"),
])
def test_bad_redirect_flags_are_refused(nginx: Nginx, flags: list[str], message: str) -> None:
    before = nginx.server_stats()
    done = run_cli(["get", nginx.url("/"), *flags])
    assert done.returncode == 2
    assert message in done.stderr
    assert nginx.server_stats().since(before).requests == 0


# -- -k and --cacert ------------------------------------------------------------------------


def test_https_is_verified_against_the_system_cas_by_default(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/")])
    assert done.returncode == 1
    assert done.stdout == ""
    assert "certificate" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_cacert_verifies_with_the_given_bundle(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/"), "--cacert", nginx.ca_path, "-v"])
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr
    assert "* tls         - " not in done.stderr  # a handshake was made and timed
    assert "* tls         " in done.stderr


def test_cacert_of_another_ca_fails_verification(nginx: Nginx, certs: CertBundle) -> None:
    done = run_cli(["get", nginx.https_url("/"), "--cacert", str(certs.client_ca_path)])
    assert done.returncode == 1
    assert done.stdout == ""
    assert "certificate" in done.stderr.lower()


def test_insecure_skips_verification(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/"), "-k"])
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr


@pytest.mark.parametrize(("make", "message"), [
    ("missing", "cannot read it: No such file or directory"),
    ("directory", "is a directory"),
    ("not-pem", "not a CA bundle"),
    ("empty", "not a CA bundle"),
])
def test_unusable_cacert_is_a_message_and_exit_2(nginx: Nginx, tmp_path: Path, make: str,
                                                 message: str) -> None:
    path = tmp_path / make
    if make == "directory":
        path.mkdir()
    elif make == "not-pem":
        path.write_text("this is not a certificate\n")
    elif make == "empty":
        path.write_bytes(b"")
    before = nginx.server_stats()
    done = run_cli(["get", nginx.https_url("/"), "--cacert", str(path)])
    assert done.returncode == 2
    assert f"poolhttp get: --cacert {path}: {message}" in done.stderr
    assert "Traceback" not in done.stderr
    assert nginx.server_stats().since(before).accepted == 0


def test_insecure_and_cacert_contradict(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/"), "-k", "--cacert", nginx.ca_path])
    assert done.returncode == 2
    assert "-k and --cacert contradict each other" in done.stderr


# -- --http2 and --http2-prior-knowledge ----------------------------------------------------


def test_without_http2_https_is_http11(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/"), "--cacert", nginx.ca_path, "-v"])
    assert done.returncode == 0, done.stderr
    assert status_lines(done.stderr) == ["HTTP/1.1 200 OK"]
    assert "* protocol    HTTP/1.1" in done.stderr


def test_http2_over_tls_and_verbose_shows_the_version(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.https_url("/"), "--cacert", nginx.ca_path, "--http2", "-v"])
    assert (done.returncode, done.stdout) == (0, "hello\n"), done.stderr
    assert status_lines(done.stderr) == ["HTTP/2 200"]
    assert "> GET / HTTP/2" in done.stderr
    assert "* protocol    HTTP/2" in done.stderr


def echo_version(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    version: str = json.loads(done.stdout)["http_version"]
    return version


def test_http2_as_the_server_sees_it(hypercorn: Hypercorn) -> None:
    tls = ["--cacert", hypercorn.ca_path]
    assert echo_version(run_cli(["get", hypercorn.url_tls("/echo"), *tls])) == "1.1"
    assert echo_version(run_cli(["get", hypercorn.url_tls("/echo"), *tls, "--http2"])) == "2"
    # Over http:// --http2 offers nothing (no Upgrade): HTTP/1.1, unless prior knowledge.
    assert echo_version(run_cli(["get", hypercorn.url_h2c("/echo"), "--http2"])) == "1.1"
    prior = run_cli(["get", hypercorn.url_h2c("/echo"), "--http2-prior-knowledge", "-v"])
    assert echo_version(prior) == "2"
    assert "* protocol    HTTP/2" in prior.stderr


def test_http2_prior_knowledge_against_an_http11_server_fails_cleanly(nginx: Nginx) -> None:
    done = run_cli(["get", nginx.url("/"), "--http2-prior-knowledge"])
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("poolhttp get: ")
    assert "Traceback" not in done.stderr


def test_http2_without_the_h2_package_says_what_to_install(nginx: Nginx) -> None:
    # sys.modules["h2"] = None makes the package look absent to the import system.
    code = ("import sys; sys.modules['h2'] = None; from poolhttp.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "get", nginx.https_url("/"),
                           "--cacert", nginx.ca_path, "--http2"],
                          capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 2
    assert "poolhttp get: --http2: " in done.stderr
    assert "pip install 'poolhttp[http2]'" in done.stderr


def test_timings_describe_the_connection_of_the_last_hop() -> None:
    timings = Timings()
    timings("dns.resolved", {"seconds": 0.002, "cached": False, "literal": False})
    timings("tcp.connected", {"seconds": 0.003})
    timings("tls.handshake", {"seconds": 0.004})
    timings("connection.acquired", {"reused": False, "connection_id": 1})
    assert (timings.dns, timings.connect, timings.tls) == (0.002, 0.003, 0.004)
    timings("connection.acquired", {"reused": True, "connection_id": 1})  # the redirect's hop
    assert (timings.dns, timings.connect, timings.tls, timings.reused) == (None, None, None,
                                                                          True)
