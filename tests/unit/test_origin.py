import pytest

from kafkatail.security.origin import origin_allowed, parse_allowed


@pytest.mark.parametrize("origin,host,allowed,ok", [
    (None, "tail.example:8080", "", True),
    ("http://tail.example:8080", "tail.example:8080", "", True),
    ("HTTP://Tail.Example:8080/", "tail.example:8080", "", True),
    ("http://evil.example", "tail.example:8080", "", False),
    ("http://tail.example:8081", "tail.example:8080", "", False),
    ("https://app.example", "tail.example", "https://app.example, http://other:1", True),
    ("http://app.example", "tail.example", "https://app.example", False),
    ("null", "tail.example", "", False),
    ("http://anything", "tail.example", "*", True),
])
def test_origin_rules(origin, host, allowed, ok):
    assert origin_allowed(origin, host, parse_allowed(allowed)) is ok
