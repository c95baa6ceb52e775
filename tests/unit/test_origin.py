import pytest

from kafkatail.config import Config, ConfigError
from kafkatail.security.origin import host_allowed, origin_allowed, parse_allowed, parse_hosts


@pytest.mark.parametrize("origin,host,scheme,allowed,ok", [
    (None, "tail.example:8080", "http", "", True),
    ("http://tail.example:8080", "tail.example:8080", "http", "", True),
    ("HTTP://Tail.Example:8080/", "tail.example:8080", "http", "", True),
    ("http://evil.example", "tail.example:8080", "http", "", False),
    ("http://tail.example:8081", "tail.example:8080", "http", "", False),
    ("https://app.example", "tail.example", "http", "https://app.example, http://other:1", True),
    ("http://app.example", "tail.example", "http", "https://app.example", False),
    ("null", "tail.example", "http", "", False),
    ("http://anything", "tail.example", "http", "*", True),
    # The scheme counts: an https page is not this plain-http site, nor the reverse.
    ("https://tail.example:8080", "tail.example:8080", "http", "", False),
    ("http://tail.example", "tail.example", "https", "", False),
    ("https://tail.example", "tail.example", "https", "", True),
    # ws/wss are the same sites as http/https (a request's scheme, or an allow-list entry).
    ("https://tail.example", "tail.example", "wss", "", True),
    ("http://tail.example:8080", "tail.example:8080", "ws", "", True),
    # Default ports are the same site written two ways.
    ("http://tail.example", "tail.example:80", "http", "", True),
    ("https://tail.example:443", "tail.example", "https", "", True),
    ("http://tail.example:443", "tail.example", "https", "", False),
    ("https://app.example:443", "tail.example", "http", "https://app.example", True),
    ("https://app.example:8443", "tail.example", "http", "https://app.example", False),
    # IPv6 literals, and malformed origins, which match nothing.
    ("http://[::1]:8080", "[::1]:8080", "http", "", True),
    ("http://[::1]:8080", "[::1]:8081", "http", "", False),
    ("http://tail.example:99999", "tail.example:99999", "http", "", False),
    ("ftp://tail.example", "tail.example", "http", "", False),
    ("http://user@tail.example", "tail.example", "http", "", False),
    # No Host: only the allow-list can match.
    ("http://tail.example", None, "http", "", False),
])
def test_origin_rules(origin, host, scheme, allowed, ok):
    assert origin_allowed(origin, host, parse_allowed(allowed), scheme) is ok


@pytest.mark.parametrize("host,allowed,ok", [
    ("evil.example:8080", "", True),                        # empty: any Host, as before
    ("tail.example:8080", "tail.example", True),            # no port on the list: any port
    ("Tail.Example.:8080", "tail.example", True),           # case and a trailing dot
    ("tail.example", "tail.example", True),
    ("evil.example:8080", "tail.example", False),            # DNS rebinding
    ("tail.example.evil.example", "tail.example", False),
    ("tail.example:8080", "tail.example:443", False),        # a port on the list must match
    ("tail.example:443", "localhost, tail.example:443", True),
    ("tail.example", "tail.example:443", False),
    ("127.0.0.1:8080", "127.0.0.1 localhost", True),
    ("[::1]:8080", "[::1]", True),
    ("", "tail.example", False),
    (None, "tail.example", False),
    ("tail.example:x", "tail.example", False),
])
def test_host_rules(host, allowed, ok):
    assert host_allowed(host, parse_hosts(allowed)) is ok


def test_allowed_hosts_is_checked_at_load():
    assert Config(allowed_hosts="a.example, b.example:8443").allowed_hosts
    with pytest.raises(ConfigError, match="allowed_hosts: .*'a/b' is not a host name"):
        Config(allowed_hosts="a/b")
