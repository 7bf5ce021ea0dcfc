"""Proxies: `Proxy`, a parsed proxy URL, and `EnvProxies`, the proxy environment variables.

Nothing here does I/O. A client builds one `EnvProxies` from the environment when it is made
(`EnvProxies.from_environ(os.environ)`), not once per request, and asks it which proxy, if any,
a request's origin goes through:

    env = EnvProxies.from_environ(os.environ)
    proxy = env.proxy_for(origin.scheme, origin.host, origin.port)   # Proxy or None

A `Proxy` keeps its credentials out of every string it shows: `url` and `str()` have none,
`repr()` shows the password as "[secure]", and `key` (what a pool key holds, so that
connections through different proxies or as different users are never shared) carries a
digest of the password in its place. The tunnels through a proxy are in `_core/tunnel.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from ._auth import BasicAuth
from ._exceptions import InvalidURL
from ._urls import URL, _normalise_host

__all__ = ["DEFAULT_PORTS", "EnvProxies", "NoProxy", "Proxy", "basic_auth_header",
           "proxy_from_env"]

DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080,
                 "socks4a": 1080}
_SCHEMES = ", ".join(f"{scheme}://" for scheme in DEFAULT_PORTS)
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The key's password digest is keyed by a secret of this process: stable for as long as a pool
# lives, and no help to anyone who reads a key (in PoolStats, a log) and guesses passwords.
_KEY_SECRET = secrets.token_bytes(16)


def _shown(text: str) -> str:
    """`text` as messages may quote it: any password replaced by "[secure]".

    More careful than URL's redaction: a password with an unencoded "/", "?" or "#" makes the
    URL split in the wrong place, so everything up to the last "@" counts as userinfo.

    >>> _shown("http://ada:pa/ss@proxy:3128")
    'http://ada:[secure]@proxy:3128'
    """
    scheme, sep, rest = text.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return text
    return f"{scheme}://{userinfo.split(':', 1)[0]}:[secure]@{hostpart}"


class Proxy:
    """A proxy, parsed from its URL: `http://`, `https://` (TLS to the proxy itself),
    `socks5://`, `socks5h://`, `socks4://` or `socks4a://`.

    The port defaults to 80 for http, 443 for https and 1080 for the SOCKS schemes. Credentials
    in the URL are percent-decoded into `username` and `password` (write an "@", ":" or "/" in
    them as %40, %3A, %2F). `remote_dns` says the proxy resolves the target's name (socks5h,
    socks4a); with socks5 and socks4 the client resolves it and sends the address.

    >>> proxy = Proxy("http://ada:s%40cret@Proxy.Example:3128")
    >>> proxy.host, proxy.port, proxy.username, proxy.password
    ('proxy.example', 3128, 'ada', 's@cret')
    >>> proxy
    Proxy('http://ada:[secure]@proxy.example:3128')
    >>> proxy.url
    'http://proxy.example:3128'
    >>> Proxy("socks5h://[::1]").url, Proxy("socks5h://[::1]").remote_dns
    ('socks5h://[::1]:1080', True)

    SOCKS4 has no passwords, only a user id: a password in a socks4:// or socks4a:// URL is
    ignored, as curl ignores it.
    """

    __slots__ = ("host", "is_socks", "is_tls", "key", "password", "port", "remote_dns",
                 "scheme", "url", "username")

    scheme: str
    host: str  # IPv6 literals without brackets, as socket functions want them
    port: int
    username: str | None
    password: str | None
    url: str  # scheme://host:port, never with credentials
    key: str
    is_socks: bool
    remote_dns: bool
    is_tls: bool

    def __init__(self, url: str | URL) -> None:
        if isinstance(url, URL):
            url = str(url)
        if not isinstance(url, str):
            raise TypeError(f"a proxy URL must be a str or a poolhttp.URL, not "
                            f"{type(url).__name__}")
        scheme, host, port, username, password = _parse(url)
        netloc = f"[{host}]" if ":" in host else host
        values = {
            "scheme": scheme, "host": host, "port": port, "username": username,
            "password": password, "url": f"{scheme}://{netloc}:{port}",
            "is_socks": scheme.startswith("socks"), "remote_dns": scheme in ("socks5h", "socks4a"),
            "is_tls": scheme == "https",
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "key", _key(scheme, netloc, port, username, password))

    @classmethod
    def coerce(cls, value: str | URL | Proxy | None) -> Proxy | None:
        """`value` as a Proxy: a Proxy as it is, None as None, a URL (str or URL) parsed.

        >>> Proxy.coerce("socks5://127.0.0.1:9050").is_socks
        True
        >>> Proxy.coerce(None) is None
        True
        """
        if value is None or isinstance(value, Proxy):
            return value
        return cls(value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Proxy is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Proxy is immutable: cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"Proxy({self._redacted()!r})"

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Proxy):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self.key)

    def _identity(self) -> tuple[str, str, int, str | None, str | None]:
        return (self.scheme, self.host, self.port, self.username, self.password)

    def _redacted(self) -> str:
        if self.username is None:
            return self.url
        secret = "" if self.password is None else ":[secure]"
        return self.url.replace("://", f"://{quote(self.username, safe='')}{secret}@", 1)


def _parse(text: str) -> tuple[str, str, int, str | None, str | None]:
    """(scheme, host, port, username, password) of a proxy URL, or InvalidURL."""
    shown = _shown(text)
    if _CONTROL.search(text):
        raise InvalidURL(f"proxy URL contains a control character: {shown!r}", url=shown)
    if not _HAS_SCHEME.match(text):
        raise InvalidURL(f"proxy URL has no scheme (expected one of {_SCHEMES}): {shown!r}",
                         url=shown)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise InvalidURL(f"unsupported proxy scheme {scheme!r} in {shown!r} (expected one of "
                         f"{_SCHEMES})", url=shown)
    # A password with an unencoded "/", "?" or "#" cuts the URL short; say how to write it.
    cut_short = "@" in text.partition("://")[2] and "@" not in parts.netloc
    hint = " (write '/', '?' and '#' in credentials as %2F, %3F and %23)" if cut_short else ""
    try:
        port = parts.port
    except ValueError:
        # Not the ValueError's text: it quotes the "port", which may be part of a password.
        raise InvalidURL(f"invalid port in proxy URL {shown!r} (1 to 65535){hint}",
                         url=shown) from None
    if port == 0:
        raise InvalidURL(f"invalid port 0 in proxy URL {shown!r} (1 to 65535)", url=shown)
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise InvalidURL(f"a proxy URL has no path, query or fragment: {shown!r}{hint}",
                         url=shown)
    if not parts.hostname:
        raise InvalidURL(f"proxy URL has no host: {shown!r}", url=shown)
    host = _normalise_host(parts.hostname, shown)
    username, password = _credentials(scheme, parts.username, parts.password, shown)
    return scheme, host, port or DEFAULT_PORTS[scheme], username, password


def _credentials(scheme: str, raw_user: str | None, raw_password: str | None,
                 shown: str) -> tuple[str | None, str | None]:
    """The percent-decoded credentials, checked against what `scheme` can carry."""
    if raw_user is None:
        return None, None
    try:
        username = unquote(raw_user, errors="strict")
        password = None if raw_password is None else unquote(raw_password, errors="strict")
    except UnicodeDecodeError:
        raise InvalidURL(f"proxy credentials are not UTF-8 once percent-decoded: {shown!r}",
                         url=shown) from None
    for what, value in (("user name", username), ("password", password)):
        if value is not None and _CONTROL.search(value):
            raise InvalidURL(f"the proxy {what} holds a control character: {shown!r}",
                             url=shown)
    if scheme in ("http", "https") and ":" in username:
        raise InvalidURL(f"a proxy user name cannot contain ':' (Basic auth, RFC 7617): "
                         f"{shown!r}", url=shown)
    if scheme.startswith("socks5"):
        # RFC 1929 gives each of them a one-byte length.
        for what, value in (("user name", username), ("password", password)):
            if value is not None and len(value.encode("utf-8")) > 255:
                raise InvalidURL(f"a SOCKS5 {what} is at most 255 bytes (RFC 1929): {shown!r}",
                                 url=shown)
    return username, password


def _key(scheme: str, netloc: str, port: int, username: str | None,
         password: str | None) -> str:
    """scheme://[user@]host:port, and "#" and a digest of the password when there is one."""
    user = "" if username is None else quote(username, safe="") + "@"
    key = f"{scheme}://{user}{netloc}:{port}"
    if password is None:
        return key
    digest = hmac.new(_KEY_SECRET, password.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{key}#{digest[:16]}"


def basic_auth_header(proxy: Proxy) -> bytes | None:
    """The `Proxy-Authorization` value for an HTTP(S) proxy's credentials, None when it has
    none (or is a SOCKS proxy, which authenticates in its own handshake). Encoded as
    `BasicAuth` encodes `Authorization`: UTF-8, then base64.

    >>> basic_auth_header(Proxy("http://Aladdin:open%20sesame@proxy:3128"))
    b'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='
    >>> basic_auth_header(Proxy("http://proxy:3128")) is None
    True
    """
    if proxy.username is None or proxy.is_socks:
        return None
    return BasicAuth(proxy.username, proxy.password or "").header_value.encode("ascii")


# -- NO_PROXY ---------------------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_BRACKETED = re.compile(r"\[([^\]]*)\](?::([0-9]*))?")


class NoProxy:
    """The hosts a NO_PROXY value sends straight to the origin, bypassing any proxy.

    Entries are separated by commas and whitespace; matching ignores case and a trailing dot.

    - `*` matches every host.
    - A domain matches itself and its subdomains, with or without a leading dot: "example.com"
      and ".example.com" both match "example.com" and "a.example.com", never "badexample.com".
      "*.example.com" is read as ".example.com" (curl has no such wildcard; it is common in
      the wild and means nothing else).
    - An IPv4 or IPv6 address (IPv6 with or without brackets) matches that address, and a CIDR
      range ("10.0.0.0/8", "fd00::/8") the addresses in it, when the target host is an IP
      literal; names are never resolved to be compared. curl does the same (CIDR since 7.86.0).
    - ":port" after an entry ("example.com:8443", "10.0.0.1:8080", "[::1]:8080") limits it to
      that port. curl has no such form (it matches names whatever the port); Go's net/http
      has, and we follow it: an IPv6 address with a port needs its brackets.

    Entries that are none of these (a bad port, a bad CIDR prefix) are left out, as curl
    leaves them, and listed in `ignored`.

    >>> rules = NoProxy(".internal, 10.0.0.0/8,[::1], example.com:8443")
    >>> rules.matches("api.internal", 443), rules.matches("10.1.2.3", 80)
    (True, True)
    >>> rules.matches("example.com", 443), rules.matches("example.com", 8443)
    (False, True)
    >>> rules.matches("::1", 80), rules.matches("badinternal", 80)
    (True, False)
    """

    __slots__ = ("_domains", "_networks", "everything", "ignored")

    def __init__(self, value: str) -> None:
        self.everything = False
        self._domains: list[tuple[str, int | None]] = []
        self._networks: list[tuple[_Network, int | None]] = []
        ignored: list[str] = []
        for entry in re.split(r"[,\s]+", value.strip()):
            if entry and not self._add(entry.lower()):
                ignored.append(entry)
        self.ignored = tuple(ignored)

    def _add(self, entry: str) -> bool:
        """Take one entry in; False when it is not one NO_PROXY can hold."""
        if entry == "*":
            self.everything = True
            return True
        bracketed = _BRACKETED.fullmatch(entry)
        if bracketed:
            address, port_text = bracketed.group(1), bracketed.group(2)
        elif entry.count(":") == 1:  # name:port or IPv4:port; IPv6 has more colons
            address, _, port_text = entry.partition(":")
        else:
            address, port_text = entry, None
        port = _entry_port(port_text)
        if port == 0:
            return False
        network = _entry_network(address)
        if network is not None:
            self._networks.append((network, port))
            return True
        name = address.removeprefix("*.").strip(".")
        if bracketed or not name or "/" in name or ":" in name:
            return False  # brackets hold an address; "/" and ":" are a broken one
        self._domains.append((name, port))
        return True

    def matches(self, host: str, port: int) -> bool:
        """Whether a request to `host`:`port` bypasses the proxy. `host` as in a URL (IPv6
        with or without brackets; any case)."""
        if self.everything:
            return True
        host = host.strip("[]").lower().rstrip(".")
        ip = _ip_literal(host)
        if ip is not None:
            return any(ip in network and entry_port in (None, port)
                       for network, entry_port in self._networks)
        return any((host == name or host.endswith("." + name)) and entry_port in (None, port)
                   for name, entry_port in self._domains)

    def __bool__(self) -> bool:
        return self.everything or bool(self._domains or self._networks)


def _entry_port(text: str | None) -> int | None:
    """None: no port given; 0: an invalid one."""
    if text is None:
        return None
    return int(text) if text.isdigit() and 0 < int(text) <= 65535 else 0


def _entry_network(address: str) -> _Network | None:
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        # Without its zone ("%eth0"): NO_PROXY entries have none to compare with.
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


# -- the environment --------------------------------------------------------------------------


def _variable(environ: Mapping[str, str], name: str, *,
              upper: bool = True) -> tuple[str, str] | None:
    """(variable, value) of the first of `name` (lower case) and `NAME` that is set and not
    empty; curl reads them in this order, and takes an empty value as unset."""
    names = (name, name.upper()) if upper else (name,)
    for variable in names:
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _env_proxy(environ: Mapping[str, str], name: str, *, upper: bool = True) -> Proxy | None:
    found = _variable(environ, name, upper=upper)
    if found is None:
        return None
    variable, value = found
    if not _HAS_SCHEME.match(value):
        value = "http://" + value  # "proxy:3128" means an HTTP proxy, as curl takes it
    try:
        return Proxy(value)
    except InvalidURL as exc:
        raise InvalidURL(f"invalid proxy URL in ${variable}: {exc}", url=exc.url) from exc


class EnvProxies:
    """The proxies the environment asks for, read once (per client) and asked per request.

    - `http_proxy` / `HTTP_PROXY`: the proxy of http:// URLs;
    - `https_proxy` / `HTTPS_PROXY`: the proxy of https:// URLs;
    - `all_proxy` / `ALL_PROXY`: the proxy of either, when its own variable is not set;
    - `no_proxy` / `NO_PROXY`: the hosts that go direct (see `NoProxy`).

    As curl does, the lower-case variable wins when both are set, an empty value counts as
    unset, and a value without a scheme is an HTTP proxy ("proxy:3128"). An invalid proxy URL
    raises InvalidURL naming its variable.

    One deliberate difference: curl ignores upper-case HTTP_PROXY, and we honour it, as
    requests and httpx do, except in a CGI process (REQUEST_METHOD is set). There HTTP_PROXY
    can come from the `Proxy:` header of the request being served ("httpoxy",
    CVE-2016-5385), so a client would send its requests wherever a caller says.

    >>> env = EnvProxies.from_environ({"HTTPS_PROXY": "proxy:3128", "NO_PROXY": ".local"})
    >>> env.proxy_for("https", "example.com", 443)
    Proxy('http://proxy:3128')
    >>> env.proxy_for("https", "printer.local", 443) is None
    True
    >>> env.proxy_for("http", "example.com", 80) is None
    True
    """

    __slots__ = ("_cache", "all_proxy", "http_proxy", "https_proxy", "no_proxy")

    def __init__(self, *, http_proxy: Proxy | None = None, https_proxy: Proxy | None = None,
                 all_proxy: Proxy | None = None, no_proxy: NoProxy | None = None) -> None:
        self.http_proxy = http_proxy
        self.https_proxy = https_proxy
        self.all_proxy = all_proxy
        self.no_proxy = no_proxy if no_proxy is not None else NoProxy("")
        self._cache: dict[tuple[str, str, int], Proxy | None] = {}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EnvProxies:
        """Read the variables out of `environ` (`os.environ`, or a dict in tests)."""
        no_proxy = _variable(environ, "no_proxy")
        return cls(
            http_proxy=_env_proxy(environ, "http_proxy", upper="REQUEST_METHOD" not in environ),
            https_proxy=_env_proxy(environ, "https_proxy"),
            all_proxy=_env_proxy(environ, "all_proxy"),
            no_proxy=NoProxy(no_proxy[1] if no_proxy else ""),
        )

    @property
    def has_proxies(self) -> bool:
        """Whether any request can go through a proxy (if not, no need to ask per request)."""
        return any((self.http_proxy, self.https_proxy, self.all_proxy))

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a request to scheme://host:port goes through, None to go direct."""
        if not self.has_proxies:
            return None
        key = (scheme, host, port)
        try:
            return self._cache[key]
        except KeyError:
            pass
        own = {"http": self.http_proxy, "https": self.https_proxy}.get(scheme)
        proxy = None if self.no_proxy.matches(host, port) else own or self.all_proxy
        if len(self._cache) >= 1024:
            self._cache.clear()  # bounded, like the URL cache: a crawl of many hosts just misses
        self._cache[key] = proxy
        return proxy

    def __repr__(self) -> str:
        return (f"EnvProxies(http_proxy={self.http_proxy!r}, https_proxy={self.https_proxy!r}, "
                f"all_proxy={self.all_proxy!r})")


def proxy_from_env(url_scheme: str, host: str, port: int,
                   environ: Mapping[str, str]) -> Proxy | None:
    """The proxy the environment gives a request to url_scheme://host:port, or None. Reads
    `environ` on each call: a client builds one `EnvProxies` instead.

    >>> proxy_from_env("http", "example.com", 80, {"ALL_PROXY": "socks5h://127.0.0.1:9050"})
    Proxy('socks5h://127.0.0.1:9050')
    """
    return EnvProxies.from_environ(environ).proxy_for(url_scheme, host, port)
