"""`poolhttp doctor`: the limits of this host that bite connection pools, read from /proc.

- Open files: every connection is a file descriptor; past the soft limit, connect() fails with
  "Too many open files" (EMFILE).
- Ephemeral ports: each outgoing connection to one destination (IP, port) needs its own local
  port from `ip_local_port_range`. Ports stay taken for 60 s in TIME_WAIT after the side that
  closes first (usually the client) closes, so connection churn, not only the pool's size, can
  run a host out of ports (EADDRNOTAVAIL, "Cannot assign requested address").
- TCP sockets by state, to see what already holds ports (TIME_WAIT, CLOSE_WAIT leaks, ...).

Linux only for the /proc parts; elsewhere they are reported as unavailable.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

__all__ = ["HostLimits", "assess", "ensure_fd_budget", "read_limits", "run_doctor"]

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
    "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}
TIME_WAIT_SECONDS = 60  # fixed in the Linux kernel (TCP_TIMEWAIT_LEN)
FD_OVERHEAD = 32  # standard streams, the results database and its WAL, the event loop, ...


@dataclass
class HostLimits:
    nofile_soft: int
    nofile_hard: int
    fds_open: int | None
    port_range: tuple[int, int] | None
    ports_in_use: int | None
    states: Counter[str] = field(default_factory=Counter)
    tw_reuse: int | None = None
    fin_timeout: int | None = None
    somaxconn: int | None = None

    @property
    def port_count(self) -> int | None:
        if self.port_range is None:
            return None
        return self.port_range[1] - self.port_range[0] + 1


@dataclass
class Finding:
    ok: bool
    text: str


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _port_range() -> tuple[int, int] | None:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def _tcp_sockets(port_range: tuple[int, int] | None) -> tuple[Counter[str], int | None]:
    """Sockets by state from /proc/net/tcp{,6}, and how many hold a port of the range."""
    states: Counter[str] = Counter()
    in_range = 0
    found = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)  # the header line
                for line in f:
                    parts = line.split()
                    if len(parts) < 4:
                        continue
                    found = True
                    state = _TCP_STATES.get(parts[3], parts[3])
                    states[state] += 1
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    if port_range and state != "LISTEN" and \
                            port_range[0] <= port <= port_range[1]:
                        in_range += 1
        except (OSError, ValueError):
            continue
    return states, (in_range if found else None)


def read_limits() -> HostLimits:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = None
    ports = _port_range()
    states, in_use = _tcp_sockets(ports)
    return HostLimits(
        nofile_soft=soft, nofile_hard=hard, fds_open=fds, port_range=ports,
        ports_in_use=in_use, states=states,
        tw_reuse=_read_int("/proc/sys/net/ipv4/tcp_tw_reuse"),
        fin_timeout=_read_int("/proc/sys/net/ipv4/tcp_fin_timeout"),
        somaxconn=_read_int("/proc/sys/net/core/somaxconn"))


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value:,}"


def assess(limits: HostLimits, max_connections: int) -> list[Finding]:
    """What the limits mean for a pool of `max_connections`; `ok=False` when it would exhaust
    one of them."""
    findings = [_assess_fds(limits, max_connections)]
    ports = limits.port_count
    if ports is None:
        findings.append(Finding(True, "ephemeral ports: unknown on this platform (no /proc)"))
        return findings
    in_use = limits.ports_in_use or 0
    if max_connections + in_use > ports:
        findings.append(Finding(False, (
            f"ephemeral ports: {max_connections:,} connections to one destination need as many "
            f"local ports, but the range holds {ports:,} and {in_use:,} are taken: connect() "
            "would fail with 'Cannot assign requested address'. Widen "
            "net.ipv4.ip_local_port_range or spread connections over more destinations")))
    else:
        findings.append(Finding(True, (
            f"ephemeral ports: {max_connections:,} connections + {in_use:,} ports in use, of "
            f"{ports:,} per destination (IP, port)")))
    churn = ports // TIME_WAIT_SECONDS
    tw = limits.states.get("TIME_WAIT", 0)
    findings.append(Finding(tw < ports // 2, (
        f"connection churn: closed connections hold their port {TIME_WAIT_SECONDS} s in "
        f"TIME_WAIT ({tw:,} now), so at most ~{churn:,} new connections/s to one destination "
        "can be sustained; keep-alive reuse (the pool's job) avoids the churn")))
    return findings


def _assess_fds(limits: HostLimits, max_connections: int) -> Finding:
    need = max_connections + FD_OVERHEAD
    soft, hard = limits.nofile_soft, limits.nofile_hard
    if soft == resource.RLIM_INFINITY or need <= soft:
        return Finding(True, f"open files: about {need:,} needed ({max_connections:,} "
                             f"connections + {FD_OVERHEAD} for the rest), soft limit "
                             f"{_limit(soft)}")
    if hard != resource.RLIM_INFINITY and need > hard:
        return Finding(False, f"open files: about {need:,} needed but the hard limit is "
                              f"{_limit(hard)}: connect() would fail with 'Too many open "
                              "files'. Only root can raise it (limits.conf, systemd "
                              "LimitNOFILE=), or lower max_connections")
    target = need if hard == resource.RLIM_INFINITY else min(hard, max(need, 4096))
    return Finding(False, f"open files: about {need:,} needed but the soft limit is "
                          f"{_limit(soft)}: connect() would fail with 'Too many open files'. "
                          f"Raise it first: ulimit -n {target}")


def ensure_fd_budget(connections: int) -> None:
    """Make room for `connections` sockets: raise the soft open-file limit up to the hard one
    (no privilege needed) when it is too low, or refuse with a CliError before any request."""
    from ._errors import CliError

    need = connections + FD_OVERHEAD
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard == resource.RLIM_INFINITY or need <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        return
    raise CliError(f"--concurrency {connections} needs about {need} open files, but this "
                   f"process may open at most {hard} (the hard limit): lower --concurrency or "
                   "raise the limit (see `poolhttp doctor`)")


def describe(limits: HostLimits) -> list[tuple[str, str]]:
    """(label, value) lines about the host."""
    fds = f" · {limits.fds_open:,} open in this process" if limits.fds_open is not None else ""
    rows = [("open files", f"soft limit {_limit(limits.nofile_soft)} · hard limit "
                           f"{_limit(limits.nofile_hard)}{fds}")]
    if limits.port_range is not None:
        low, high = limits.port_range
        rows.append(("ephemeral ports", f"{low}-{high} ({limits.port_count:,} ports) · "
                                        f"{limits.ports_in_use or 0:,} in use"))
    else:
        rows.append(("ephemeral ports", "unknown (no /proc/sys/net/ipv4/ip_local_port_range)"))
    if limits.states:
        states = " · ".join(f"{name} {count:,}" for name, count in limits.states.most_common())
        rows.append(("TCP sockets", states))
    else:
        rows.append(("TCP sockets", "unknown (no /proc/net/tcp)"))
    if limits.tw_reuse is not None:
        meaning = {0: "off", 1: "on", 2: "loopback only"}.get(limits.tw_reuse, "?")
        rows.append(("tcp_tw_reuse", f"{limits.tw_reuse} ({meaning}: reuse of TIME_WAIT ports "
                                     "for new outgoing connections)"))
    if limits.fin_timeout is not None:
        rows.append(("tcp_fin_timeout", f"{limits.fin_timeout} s (FIN_WAIT2)"))
    if limits.somaxconn is not None:
        rows.append(("somaxconn", f"{limits.somaxconn:,} (accept backlog of local servers)"))
    return rows


def run_doctor(max_connections: int) -> int:
    """Print the report; exit status 1 when `max_connections` would exhaust a limit."""
    limits = read_limits()
    console = Console(highlight=False)
    console.print(f"[bold]poolhttp doctor[/]: host limits that bite a connection pool "
                  f"(checked for max_connections={max_connections:,})")
    host = Table(show_header=False, box=None, padding=(0, 1))
    host.add_column(style="bold", no_wrap=True)
    host.add_column(overflow="fold")
    for label, value in describe(limits):
        host.add_row(label, value)
    console.print(host)
    findings = assess(limits, max_connections)
    verdicts = Table(show_header=False, box=None, padding=(0, 1))
    verdicts.add_column(no_wrap=True)
    verdicts.add_column(overflow="fold")
    for finding in findings:
        verdicts.add_row("[green]ok[/]" if finding.ok else "[bold red]WARNING[/]", finding.text)
    console.print(verdicts)
    return 0 if all(f.ok for f in findings) else 1
