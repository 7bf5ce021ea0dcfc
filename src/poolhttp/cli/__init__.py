"""The `poolhttp` command (also `python -m poolhttp`).

    poolhttp fetch URLS [--db results.sqlite] [--jsonl out.jsonl] [--resume] ...
    poolhttp get URL [-v] [-o FILE] [-f] [-L] [-k | --cacert FILE] [--http2] ...
    poolhttp doctor [--max-connections N]
    poolhttp demo [--count N]
    poolhttp serve-demo [--port P] [--hosts N] [--json]

Exit status: 0 done; 1 the run failed (e.g. the database could not be written); 2 bad flags
or unusable input (nothing was sent); 3 `fetch` finished but skipped malformed input lines;
130 interrupted (results so far are saved; `--resume` continues).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TypeVar

from poolhttp import __version__
from poolhttp.bulk import DEFAULT_CONCURRENCY, DEFAULT_PER_HOST

from ._errors import EXIT_FAILED, EXIT_INTERRUPTED, CliError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except CliError as exc:
        print(f"poolhttp {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"poolhttp {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not worth a traceback.
        sys.stderr.close()
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolhttp", description="HTTP client tools built on poolhttp's connection pool.")
    parser.add_argument("--version", action="version", version=f"poolhttp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_fetch(commands)
    _add_get(commands)
    _add_doctor(commands)
    _add_demo(commands)
    _add_serve_demo(commands)
    _add_export(commands)
    _add_report(commands)
    return parser


# -- argument types: each names the problem ---------------------------------------------------
N = TypeVar("N", int, float)


def number(kind: type[N], low: N, *, above: bool = False) -> Callable[[str], N]:
    """An argparse type: a finite `kind` (int or float) at least `low` (`above`: greater)."""
    noun = "a whole number" if kind is int else "a number"
    bound = f"greater than {low}" if above else f"at least {low}"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (value <= low) if above else (value < low):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value

    return parse


positive_int = number(int, 1)
count = number(int, 0)
positive_float = number(float, 0, above=True)


def _add_fetch(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._inputs import FORMATS

    p = commands.add_parser(
        "fetch", help="fetch a list of URLs into SQLite (and/or JSONL)",
        description="Fetch every URL of a list through one connection pool, with bounded "
                    "concurrency, and store one result per input line.")
    p.add_argument("urls", metavar="URLS",
                   help="file of URLs: one per line, or CSV/JSONL with a url column; '-' reads "
                        "standard input")
    p.add_argument("--db", metavar="PATH",
                   help="SQLite results database (default: results.sqlite, unless only "
                        "--jsonl is given)")
    p.add_argument("--jsonl", metavar="PATH", help="also append results as JSON lines ('-': "
                                                   "standard output)")
    p.add_argument("-c", "--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY,
                   metavar="N", help=f"requests in flight (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--per-host", type=positive_int, default=DEFAULT_PER_HOST, metavar="N",
                   help=f"requests in flight to one origin (default {DEFAULT_PER_HOST})")
    p.add_argument("--rate", type=positive_float, metavar="R",
                   help="at most R requests per second to each origin")
    p.add_argument("--timeout", type=positive_float, metavar="S",
                   help="time-out in seconds for each phase (connect, read, write, pool)")
    p.add_argument("--retries", type=count, default=0, metavar="N",
                   help="retry a failed request up to N times, with backoff: connect errors, "
                        "and for GET/HEAD/PUT/DELETE/OPTIONS also read errors and statuses "
                        "429, 500, 502, 503 and 504 (when they run out, the last response "
                        "is stored)")
    p.add_argument("--keep-bodies", action="store_true", default=None,
                   help="store response bodies (default: only their size and SHA-256)")
    p.add_argument("-L", "--location", action="store_true", default=None,
                   help="follow redirects (the final URL is stored as final_url)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                   help="header sent with every request (repeatable)")
    p.add_argument("-X", "--method", metavar="M", help="HTTP method (default GET)")
    p.add_argument("--resume", action="store_true",
                   help="continue the unfinished run over URLS in --db (with several, name "
                        "one with --run)")
    p.add_argument("--new", action="store_true",
                   help="start a new run even though an earlier run over URLS is unfinished")
    p.add_argument("--run", type=positive_int, metavar="N", dest="run_id",
                   help="with --resume: the run to continue (its id is in the summary and in "
                        "the runs table)")
    p.add_argument("--format", choices=FORMATS, help="input format (default auto)")
    p.add_argument("--engine", choices=("dask",),
                   help="send the requests from a Dask cluster (the dask extra: pip install "
                        "'poolhttp[dask]'); without it, from this process")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="with --engine dask: start a local cluster of N worker processes "
                        "(default 2)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --engine dask: use the running cluster at ADDRESS "
                        "(tcp://host:8786)")
    p.add_argument("--worker-threads", type=positive_int, metavar="N",
                   help="with --workers: chunks each worker runs at once (default 2)")
    p.add_argument("--chunk", type=positive_int, metavar="N",
                   help="with --engine dask: input records per task (default 500)")
    _add_display_flags(p)
    p.set_defaults(handler=_run_fetch)


def _add_display_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="auto",
                   help="progress display (auto: a bar on a terminal, lines otherwise)")
    p.add_argument("--progress-interval", type=positive_float, default=5.0, metavar="S",
                   help="seconds between plain progress lines (default 5)")
    p.add_argument("--batch", type=positive_int, default=1000, metavar="N",
                   help="results per database transaction (default 1000)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="event loop (auto: uvloop when installed)")


def _run_fetch(args: argparse.Namespace) -> int:
    from ._cluster import cluster_args
    from ._drive import fetch_command
    from ._fetch import FetchArgs

    return fetch_command(FetchArgs.from_namespace(args), cluster_args(args))


def _add_get(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("get", help="one request, like curl; -v shows timings",
                            description="Send one request and write the body to standard "
                                        "output.")
    p.add_argument("url", metavar="URL")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the exchange (every hop of it), the HTTP version and the "
                        "timings on standard error")
    p.add_argument("-X", "--method", default="GET", metavar="M", help="HTTP method")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'",
                   help="request header (repeatable)")
    p.add_argument("-d", "--data", metavar="TEXT", help="request body ('@file' reads a file)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write the body to FILE instead of standard output (created only "
                        "once there is a response to write)")
    p.add_argument("-i", "--include", action="store_true",
                   help="write the response head before the body")
    p.add_argument("-f", "--fail", action="store_true",
                   help="for an HTTP error status (>= 400) write nothing and exit with 22")
    p.add_argument("-L", "--location", action="store_true", help="follow redirects")
    p.add_argument("--max-redirs", type=count, metavar="N",
                   help="with -L: follow at most N redirects (default 20)")
    p.add_argument("-k", "--insecure", action="store_true",
                   help="do not verify the server's certificate")
    p.add_argument("--cacert", metavar="FILE",
                   help="verify the server's certificate with the CA bundle FILE (PEM) "
                        "instead of the system's")
    p.add_argument("--http2", action="store_true",
                   help="offer HTTP/2 (by ALPN: https only; http:// stays HTTP/1.1); needs "
                        "poolhttp[http2]")
    p.add_argument("--http2-prior-knowledge", action="store_true",
                   help="speak HTTP/2 only: h2c from the first byte over http://, h2 or "
                        "nothing over https://")
    p.add_argument("--timeout", type=positive_float, metavar="S", help="time-out in seconds")
    p.set_defaults(handler=_run_get)


def _run_get(args: argparse.Namespace) -> int:
    from ._get import run_get

    return run_get(args)


def _add_doctor(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("doctor", help="the limits of this host that bite connection pools",
                            description="Show the open-file limit, the ephemeral port range "
                                        "and TCP sockets by state, and what they mean for a "
                                        "pool of a given size.")
    p.add_argument("--max-connections", type=positive_int, default=100, metavar="N",
                   help="the pool size to check against (default 100)")
    p.set_defaults(handler=_run_doctor)


def _run_doctor(args: argparse.Namespace) -> int:
    from ._doctor import run_doctor

    return run_doctor(args.max_connections)


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("demo", help="fetch 20,000 URLs from local demo servers",
                            description="Start local HTTP servers on loopback and fetch "
                                        "URLs from them with `poolhttp fetch`.")
    p.add_argument("--count", type=positive_int, default=20_000, metavar="N",
                   help="URLs to fetch (default 20000)")
    p.add_argument("--hosts", type=positive_int, default=4, metavar="N",
                   help="local origins, on 127.0.0.1, 127.0.0.2, ... (default 4; at most 250)")
    p.add_argument("--db", metavar="PATH", help="results database (default: "
                                                "poolhttp-demo.sqlite, here)")
    p.add_argument("-c", "--concurrency", type=positive_int, default=64, metavar="N")
    p.add_argument("--per-host", type=positive_int, default=16, metavar="N")
    p.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="auto")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args)


def _add_serve_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "serve-demo", help="serve the demo's local origins until Ctrl-C",
        description="Serve the local HTTP/1.1 origins of `poolhttp demo` on 127.0.0.1, "
                    "127.0.0.2, ... and print them; runs until Ctrl-C or SIGTERM. Any path "
                    "works; the query chooses the answer: ?status=N (200-599), ?delay=S "
                    "(at most 30), ?size=N (bytes, at most 16 MiB), ?close=1 (hang up); "
                    "/echo answers JSON describing the request.")
    p.add_argument("--port", type=count, default=0, metavar="P",
                   help="the port of every origin (default: a free port for each); where "
                        "only 127.0.0.1 is local, the origins take ports P, P+1, ...")
    p.add_argument("--hosts", type=positive_int, default=4, metavar="N",
                   help="origins, on 127.0.0.1 to 127.0.0.N (default 4; at most 250)")
    p.add_argument("--json", action="store_true",
                   help='print the origins as one JSON line {"origins": [...]}, for programs')
    p.add_argument("--until-stdin-eof", action="store_true",
                   help="also stop when standard input closes (a parent process that ends "
                        "cannot leave the server running)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="event loop (auto: uvloop when installed)")
    p.set_defaults(handler=_run_serve_demo)


def _run_serve_demo(args: argparse.Namespace) -> int:
    from ._server import run_serve_demo

    return run_serve_demo(args)


def _add_export(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._export import FORMATS, ROW_GROUP_ROWS

    p = commands.add_parser(
        "export", help="write the results of a run as CSV, JSON lines or Parquet",
        description="Write the rows of a run of `poolhttp fetch` (the results view of its "
                    "database, opened read-only) as CSV, JSON lines or Parquet, streaming.")
    p.add_argument("db", metavar="DB", help="results database written by `poolhttp fetch`")
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: from the -o FILE's extension)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", type=positive_int, metavar="N", dest="run_id",
                       help="the run to export (default: the newest)")
    which.add_argument("--all-runs", action="store_true", help="export every run")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write to FILE, replaced only once the export is complete (default "
                        "and '-': standard output; parquet needs a FILE)")
    p.add_argument("--bodies", action="store_true",
                   help="include the stored bodies (base64 in CSV and JSON lines, binary in "
                        "Parquet)")
    p.add_argument("--row-group-size", type=positive_int, metavar="N",
                   help=f"parquet: rows per row group (default {ROW_GROUP_ROWS})")
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ._export import run_export

    return run_export(args)


def _add_report(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser(
        "report", help="one HTML page of charts about a run (needs poolhttp[report])",
        description="Write one self-contained HTML page about a run of `poolhttp fetch` "
                    "(its database opened read-only): throughput, latency percentiles and "
                    "histogram, statuses and errors, connection reuse, and a table per "
                    "origin. The page fetches nothing when opened.")
    p.add_argument("db", metavar="DB", help="results database written by `poolhttp fetch`")
    p.add_argument("--run", type=positive_int, metavar="N", dest="run_id",
                   help="the run to report on (default: the newest)")
    p.add_argument("-o", "--output", metavar="FILE", default="report.html",
                   help="write to FILE, replaced only once it is complete (default "
                        "report.html; '-': standard output)")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from ._page import run_report

    return run_report(args)
