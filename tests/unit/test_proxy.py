"""Proxy URLs (`Proxy`), the Proxy-Authorization value, and the proxy environment variables
(`EnvProxies`, `NoProxy`)."""

from __future__ import annotations

import pytest

from poolhttp import URL, InvalidURL
from poolhttp._proxy import EnvProxies, NoProxy, Proxy, basic_auth_header, proxy_from_env

PASSWORD = "hunter2-s3cret"

# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "scheme", "port", "socks", "remote_dns", "tls"), [
    ("http://proxy.example", "http", 80, False, False, False),
    ("https://proxy.example", "https", 443, False, False, True),
    ("socks5://proxy.example", "socks5", 1080, True, False, False),
    ("socks5h://proxy.example", "socks5h", 1080, True, True, False),
    ("socks4://proxy.example", "socks4", 1080, True, False, False),
    ("socks4a://proxy.example", "socks4a", 1080, True, True, False),
])
def test_schemes_and_default_ports(text: str, scheme: str, port: int, socks: bool,
                                   remote_dns: bool, tls: bool) -> None:
    proxy = Proxy(text)
    assert (proxy.scheme, proxy.host, proxy.port) == (scheme, "proxy.example", port)
    assert (proxy.is_socks, proxy.remote_dns, proxy.is_tls) == (socks, remote_dns, tls)
    assert proxy.url == f"{scheme}://proxy.example:{port}"
    assert (proxy.username, proxy.password) == (None, None)


def test_scheme_and_host_are_lower_cased_and_a_port_kept() -> None:
    proxy = Proxy("SOCKS5H://Proxy.EXAMPLE:9050/")
    assert (proxy.scheme, proxy.host, proxy.port) == ("socks5h", "proxy.example", 9050)
    assert proxy.url == "socks5h://proxy.example:9050"


def test_credentials_are_percent_decoded() -> None:
    proxy = Proxy("http://al%40ice:p%3Aw%2F%23%20%C3%A9@proxy:3128")
    assert proxy.username == "al@ice"
    assert proxy.password == "p:w/# é"
    assert Proxy("http://ada@proxy").password is None
    assert Proxy("http://ada:@proxy").password == ""


@pytest.mark.parametrize(("text", "host", "url"), [
    ("http://[::1]:3128", "::1", "http://[::1]:3128"),
    ("socks5://[2001:DB8::0:1]", "2001:db8::1", "socks5://[2001:db8::1]:1080"),
    ("https://192.0.2.7", "192.0.2.7", "https://192.0.2.7:443"),
])
def test_ip_literal_hosts(text: str, host: str, url: str) -> None:
    proxy = Proxy(text)
    assert proxy.host == host  # no brackets: what socket functions take
    assert proxy.url == url


def test_a_url_object_and_coerce() -> None:
    proxy = Proxy(URL(f"http://ada:{PASSWORD}@proxy:3128/"))
    assert (proxy.host, proxy.port, proxy.password) == ("proxy", 3128, PASSWORD)
    assert Proxy.coerce(proxy) is proxy
    assert Proxy.coerce(None) is None
    assert Proxy.coerce("socks5://h") == Proxy("socks5://h:1080")
    assert Proxy.coerce(URL("https://h")) == Proxy("https://h:443")


def test_proxies_are_frozen_values() -> None:
    proxy = Proxy("http://ada:pw@proxy:3128")
    with pytest.raises(AttributeError, match="immutable"):
        proxy.port = 1
    with pytest.raises(AttributeError, match="immutable"):
        del proxy.host
    assert proxy == Proxy("http://ada:pw@proxy:3128")
    assert hash(proxy) == hash(Proxy("http://ada:pw@proxy:3128"))
    assert proxy != Proxy("http://ada:other@proxy:3128")
    assert proxy != Proxy("https://ada:pw@proxy:3128")
    assert len({proxy, Proxy("http://ada:pw@proxy:3128"), Proxy("http://proxy:3128")}) == 2


@pytest.mark.parametrize(("text", "problem"), [
    ("ftp://proxy:21", "unsupported proxy scheme 'ftp'"),
    ("socks6://proxy", "unsupported proxy scheme 'socks6'"),
    ("proxy:3128", "no scheme"),
    ("http://", "no host"),
    (f"http://ada:{PASSWORD}@:3128", "no host"),
    ("http://proxy:3128/path", "no path, query or fragment"),
    ("http://proxy:3128?x=1", "no path, query or fragment"),
    ("http://proxy:3128?", "no path, query or fragment"),
    ("http://proxy:3128#top", "no path, query or fragment"),
    ("http://proxy:99999", "invalid port"),
    ("http://proxy:0", "invalid port 0"),
    ("http://proxy:abc", "invalid port"),
    ("http://pro xy:3128", "invalid host name"),
    ("http://proxy\r\n:3128", "control character"),
    (f"http://ad%3Aa:{PASSWORD}@proxy", "cannot contain ':'"),
    (f"http://ada%0d%0a:{PASSWORD}@proxy", "user name holds a control character"),
    ("http://ada:pw%00@proxy", "password holds a control character"),
    (f"http://ada:{PASSWORD}%FF@proxy", "not UTF-8"),
    (f"socks5://{'u' * 256}:{PASSWORD}@proxy", "SOCKS5 user name is at most 255 bytes"),
    (f"socks5h://ada:{'p' * 256}@proxy", "SOCKS5 password is at most 255 bytes"),
])
def test_bad_proxy_urls(text: str, problem: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        Proxy(text)
    assert problem in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in (caught.value.url or "")
    assert "p" * 256 not in str(caught.value)


@pytest.mark.parametrize("text", [
    f"http://ada:{PASSWORD[:6]}/{PASSWORD[7:]}@proxy:3128",  # an unencoded "/" in it
    f"http://ada:{PASSWORD[:6]}?{PASSWORD[7:]}@proxy:3128",
    f"http://ada:{PASSWORD[:6]}#{PASSWORD[7:]}@proxy:3128",
    "http://ada:1234/5678@proxy:3128",  # splits into a valid port and a path
])
def test_a_password_that_breaks_the_url_is_never_quoted(text: str) -> None:
    with pytest.raises(InvalidURL) as caught:
        Proxy(text)
    message = str(caught.value)
    for secret in (PASSWORD[:6], PASSWORD[7:], "1234", "5678"):
        assert secret not in message
    assert "%2F" in message  # it says how to write such a password


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        Proxy(b"http://proxy")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        Proxy.coerce(3128)  # type: ignore[arg-type]


def test_socks4_ignores_a_password() -> None:
    proxy = Proxy(f"socks4a://ada:{PASSWORD}@proxy")
    assert proxy.username == "ada"  # the SOCKS4 user id


# -- what a proxy shows of itself ---------------------------------------------------------------


def test_repr_str_and_url_never_show_the_password() -> None:
    proxy = Proxy(f"http://ada:{PASSWORD}@proxy:3128")
    assert repr(proxy) == "Proxy('http://ada:[secure]@proxy:3128')"
    assert str(proxy) == proxy.url == "http://proxy:3128"
    assert repr(Proxy("socks5://ada@proxy")) == "Proxy('socks5://ada@proxy:1080')"
    assert repr(Proxy("http://al%40ice:x@proxy")) == "Proxy('http://al%40ice:[secure]@proxy:80')"
    for text in (repr(proxy), str(proxy), proxy.url, proxy.key, f"{proxy}", f"{proxy!r}"):
        assert PASSWORD not in text


def test_the_key_tells_credentials_apart_without_holding_the_password() -> None:
    plain = Proxy("http://proxy:3128")
    ada = Proxy(f"http://ada:{PASSWORD}@proxy:3128")
    ada_again = Proxy(f"http://ada:{PASSWORD}@PROXY:3128/")
    other_password = Proxy("http://ada:other@proxy:3128")
    bob = Proxy(f"http://bob:{PASSWORD}@proxy:3128")
    assert plain.key == "http://proxy:3128"
    assert ada.key.startswith("http://ada@proxy:3128#")
    assert ada.key == ada_again.key
    assert len({plain.key, ada.key, other_password.key, bob.key}) == 4
    assert Proxy("socks5://ada@proxy").key == "socks5://ada@proxy:1080"
    assert Proxy("socks5://ada:@proxy").key != Proxy("socks5://ada@proxy").key
    assert Proxy("socks5://ada@proxy").key != Proxy("socks5h://ada@proxy").key
    for key in (ada.key, bob.key):
        assert PASSWORD not in key


def test_the_key_quotes_a_user_name_that_could_be_read_as_a_host() -> None:
    # "a@b" as user on host c, and user "a" on host "b@c" cannot exist; but the key of user
    # "a@b" must not read as user "a".
    assert Proxy("socks5://a%40b@c").key == "socks5://a%40b@c:1080"


# -- Proxy-Authorization --------------------------------------------------------------------


def test_basic_auth_header() -> None:
    assert basic_auth_header(Proxy("http://ada:s3cret@proxy")) == b"Basic YWRhOnMzY3JldA=="
    # UTF-8 before base64, as BasicAuth does: "zoë:pä ss"
    assert basic_auth_header(Proxy("https://zo%C3%AB:p%C3%A4%20ss@proxy")) == (
        b"Basic em/Dqzpww6Qgc3M=")
    assert basic_auth_header(Proxy("http://ada@proxy")) == b"Basic YWRhOg=="  # "ada:"
    assert basic_auth_header(Proxy("http://proxy")) is None
    assert basic_auth_header(Proxy("socks5://ada:s3cret@proxy")) is None


# -- the environment --------------------------------------------------------------------------


def env(**variables: str) -> EnvProxies:
    return EnvProxies.from_environ(variables)


def test_no_variables_no_proxy() -> None:
    proxies = env(PATH="/usr/bin")
    assert not proxies.has_proxies
    assert proxies.proxy_for("https", "example.com", 443) is None


def test_each_scheme_has_its_variable() -> None:
    proxies = env(http_proxy="http://plain:3128", https_proxy="http://secure:3128")
    assert proxies.proxy_for("http", "example.com", 80) == Proxy("http://plain:3128")
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://secure:3128")


def test_lower_case_wins_over_upper_case() -> None:
    proxies = env(https_proxy="http://lower:1", HTTPS_PROXY="http://upper:2",
                  http_proxy="http://lower:3", HTTP_PROXY="http://upper:4",
                  all_proxy="socks5://lower:5", ALL_PROXY="socks5://upper:6")
    assert proxies.https_proxy == Proxy("http://lower:1")
    assert proxies.http_proxy == Proxy("http://lower:3")
    assert proxies.all_proxy == Proxy("socks5://lower:5")


def test_upper_case_alone_is_honoured() -> None:
    proxies = env(HTTP_PROXY="http://upper:4", HTTPS_PROXY="http://upper:2")
    assert proxies.proxy_for("http", "example.com", 80) == Proxy("http://upper:4")
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://upper:2")


def test_http_proxy_is_ignored_in_a_cgi_process() -> None:
    # httpoxy: a request's "Proxy:" header arrives as HTTP_PROXY in a CGI process.
    proxies = env(REQUEST_METHOD="GET", HTTP_PROXY="http://attacker:8080",
                  HTTPS_PROXY="http://corporate:3128")
    assert proxies.proxy_for("http", "example.com", 80) is None
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://corporate:3128")
    # The lower-case variable cannot come from a header, so it still counts.
    assert env(REQUEST_METHOD="GET", http_proxy="http://ok:1").http_proxy == Proxy("http://ok:1")


def test_all_proxy_is_the_fallback() -> None:
    proxies = env(ALL_PROXY="socks5h://tor:9050", https_proxy="http://secure:3128")
    assert proxies.proxy_for("http", "example.com", 80) == Proxy("socks5h://tor:9050")
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://secure:3128")
    assert proxies.proxy_for("ws", "example.com", 80) == Proxy("socks5h://tor:9050")


def test_empty_values_are_unset() -> None:
    proxies = env(https_proxy="", HTTPS_PROXY="http://upper:2", all_proxy="  ", NO_PROXY="")
    assert proxies.https_proxy == Proxy("http://upper:2")
    assert proxies.all_proxy is None
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://upper:2")


def test_a_value_without_scheme_is_an_http_proxy() -> None:
    proxies = env(https_proxy="proxy.corp:3128", all_proxy="ada:pw@10.0.0.1")
    assert proxies.https_proxy == Proxy("http://proxy.corp:3128")
    assert proxies.all_proxy == Proxy("http://ada:pw@10.0.0.1:80")


def test_an_invalid_variable_is_named() -> None:
    with pytest.raises(InvalidURL, match=r"\$HTTPS_PROXY: unsupported proxy scheme 'ftp'"):
        env(HTTPS_PROXY="ftp://proxy")
    with pytest.raises(InvalidURL, match=r"\$all_proxy: .*no path") as caught:
        env(all_proxy=f"http://ada:{PASSWORD}@proxy:3128/x")
    assert PASSWORD not in str(caught.value)


def test_proxy_from_env_reads_the_mapping_it_is_given() -> None:
    environ = {"https_proxy": "http://p:1", "no_proxy": "internal"}
    assert proxy_from_env("https", "example.com", 443, environ) == Proxy("http://p:1")
    assert proxy_from_env("https", "api.internal", 443, environ) is None
    assert proxy_from_env("http", "example.com", 80, environ) is None


def test_no_proxy_applies_to_every_proxy_variable() -> None:
    proxies = env(http_proxy="http://p:1", https_proxy="http://p:2", ALL_PROXY="socks5://p:3",
                  no_proxy="example.com")
    for scheme in ("http", "https", "ws"):
        assert proxies.proxy_for(scheme, "www.example.com", 443) is None
        assert proxies.proxy_for(scheme, "example.org", 443) is not None


def test_no_proxy_lower_case_wins() -> None:
    proxies = env(https_proxy="http://p:1", no_proxy="a.example", NO_PROXY="b.example")
    assert proxies.proxy_for("https", "a.example", 443) is None
    assert proxies.proxy_for("https", "b.example", 443) is not None


def test_answers_are_cached_but_stay_right() -> None:
    proxies = env(https_proxy="http://p:1", no_proxy="internal")
    for _ in range(3):
        assert proxies.proxy_for("https", "api.internal", 443) is None
        assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://p:1")
    for number in range(3000):  # past the cache's bound
        assert proxies.proxy_for("https", f"h{number}.internal", 443) is None
    assert proxies.proxy_for("https", "example.com", 443) == Proxy("http://p:1")


def test_repr_of_the_environment_hides_passwords() -> None:
    text = repr(env(https_proxy=f"http://ada:{PASSWORD}@p:1"))
    assert "https_proxy=Proxy('http://ada:[secure]@p:1')" in text
    assert PASSWORD not in text


# -- NO_PROXY ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "host", "port", "bypass"), [
    # a domain: itself and its subdomains, with or without the leading dot
    ("example.com", "example.com", 443, True),
    ("example.com", "a.example.com", 443, True),
    ("example.com", "a.b.example.com", 443, True),
    (".example.com", "example.com", 443, True),
    (".example.com", "a.example.com", 443, True),
    ("*.example.com", "a.example.com", 443, True),
    ("*.example.com", "example.com", 443, True),
    ("example.com", "badexample.com", 443, False),
    (".example.com", "badexample.com", 443, False),
    ("example.com", "example.com.evil", 443, False),
    ("a.example.com", "example.com", 443, False),
    # case, trailing dots, whitespace
    ("EXAMPLE.com", "www.Example.COM", 443, True),
    ("example.com.", "www.example.com", 443, True),
    ("example.com", "www.example.com.", 443, True),
    ("  foo.test ,\texample.com\n", "example.com", 443, True),
    ("foo.test example.com", "example.com", 443, True),
    ("foo.test,,example.com,", "example.com", 443, True),
    # everything
    ("*", "anything.at.all", 1, True),
    ("*", "10.0.0.1", 1, True),
    ("foo.test, *", "example.com", 443, True),
    ("", "example.com", 443, False),
    # IPv4 and IPv6 literals, IPv6 with or without brackets
    ("192.0.2.7", "192.0.2.7", 80, True),
    ("192.0.2.7", "192.0.2.8", 80, False),
    ("::1", "::1", 80, True),
    ("[::1]", "::1", 80, True),
    ("::1", "[::1]", 80, True),
    ("2001:db8::1", "2001:DB8:0::1", 80, True),
    ("::1", "::2", 80, False),
    # CIDR ranges, for IP literal hosts only
    ("10.0.0.0/8", "10.200.3.4", 80, True),
    ("10.0.0.0/8", "11.0.0.1", 80, False),
    ("192.168.1.0/24", "192.168.1.255", 80, True),
    ("192.168.1.0/24", "192.168.2.1", 80, False),
    ("fd00::/8", "fd12:3456::1", 80, True),
    ("fd00::/8", "fe80::1", 80, False),
    ("::1/128", "::1", 80, True),
    ("[fd00::/8]", "fd00::5", 80, True),
    ("10.0.0.0/8", "10.example.com", 80, False),
    ("10.0.0.0/8", "::ffff:1.2.3.4", 80, False),
    # names are not resolved to be compared with addresses
    ("localhost", "127.0.0.1", 80, False),
    ("127.0.0.1", "localhost", 80, False),
    # ports
    ("example.com:8443", "example.com", 8443, True),
    ("example.com:8443", "example.com", 443, False),
    ("example.com:8443", "api.example.com", 8443, True),
    ("10.0.0.1:8080", "10.0.0.1", 8080, True),
    ("10.0.0.1:8080", "10.0.0.1", 80, False),
    ("10.0.0.0/8:8080", "10.9.9.9", 8080, True),
    ("[::1]:8080", "::1", 8080, True),
    ("[::1]:8080", "::1", 80, False),
    ("example.com", "example.com", 1, True),  # without a port: any port
])
def test_no_proxy_matching(rules: str, host: str, port: int, bypass: bool) -> None:
    assert NoProxy(rules).matches(host, port) is bypass


def test_no_proxy_leaves_out_entries_it_cannot_read() -> None:
    rules = NoProxy("example.com:http, 10.0.0.0/33, [example.com], ok.test, h:0, h:70000, "
                    "a/b, [::1]:x")
    assert rules.ignored == ("example.com:http", "10.0.0.0/33", "[example.com]", "h:0",
                             "h:70000", "a/b", "[::1]:x")
    assert rules.matches("ok.test", 443)
    assert not rules.matches("example.com", 80)
    assert not rules.matches("10.0.0.1", 80)
    assert bool(rules)
    assert not NoProxy(" , ")
