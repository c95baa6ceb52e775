import pytest

from kafkatail.tail.request import BadRequest, parse, parse_start, parse_timestamp


@pytest.mark.parametrize("raw,kind", [
    (None, "latest"), ("", "latest"), ("latest", "latest"), ("earliest", "earliest"),
    ("-5", "last"), ("ts:1700000000000", "time"), ("ts:2026-11-24T06:00:00Z", "time"),
    ("offsets:0:5,1:7", "offsets"),
])
def test_from_forms(raw, kind):
    assert parse_start(raw).kind == kind


def test_last_and_offsets_values():
    assert parse_start("-25").last == 25
    assert dict(parse_start("offsets:0:5,3:9").offsets) == {0: 5, 3: 9}


def test_iso_timestamp_without_zone_is_utc():
    assert parse_timestamp("1970-01-01T00:00:01") == 1000
    assert parse_timestamp("1970-01-01T01:00:01+01:00") == 1000


@pytest.mark.parametrize("raw", [
    "bogus", "-0", "-x", "--1", "-1000001", "ts:", "ts:yesterday", "offsets:", "offsets:0",
    "offsets:0:1,0:2", "offsets:-1:0", "offsets:a:b", "-99999999999999999999999",
])
def test_bad_from(raw):
    with pytest.raises(BadRequest) as e:
        parse_start(raw)
    assert str(e.value).startswith("from:")


@pytest.mark.parametrize("topic", ["", "a b", "x" * 250, "../etc", "t?", "é"])
def test_bad_topic(topic):
    with pytest.raises(BadRequest):
        parse(topic, {})


@pytest.mark.parametrize("args,key", [
    ({"partitions": "0,x"}, "partitions"), ({"partitions": "-1"}, "partitions"),
    ({"max": "0"}, "max"), ({"max": "abc"}, "max"), ({"format": "xml"}, "format"),
    ({"regex": "("}, "regex"), ({"regex": "a" * 513}, "regex"), ({"filter": "a" * 1025}, "filter"),
])
def test_bad_args_name_the_key(args, key):
    with pytest.raises(BadRequest) as e:
        parse("t", args)
    assert str(e.value).startswith(key + ":")


def test_defaults_and_describe():
    req = parse("orders", {})
    assert req.start.kind == "latest" and req.partitions is None and req.format == "auto"
    assert req.describe() == {"from": "latest", "partitions": None, "max": None,
                              "format": "auto", "until": None, "filter": "", "regex": "",
                              "where": ""}


def test_offsets_default_partitions_to_those_named():
    assert parse("t", {"from": "offsets:2:0,0:4"}).partitions == (0, 2)


def test_matcher_substring_is_case_insensitive_and_checks_key_or_value():
    m = parse("t", {"filter": "ERROR"}).matcher
    assert m.matches(None, "an error happened")
    assert m.matches("Error-key", None)
    assert not m.matches("k", "fine")


def test_matcher_regex_and_substring_both_apply():
    m = parse("t", {"filter": "svc", "regex": r"\d{3}ms"}).matcher
    assert m.matches("svc", "took 120ms")
    assert not m.matches("svc", "took 1s")
    assert not m.matches("other", "took 120ms")


def test_matcher_substring_and_regex_search_header_names_and_values():
    headers = [["trace-id", "Abc-123"], ["empty", None], ["bin", "3q2+7w==", "base64"]]
    assert parse("t", {"filter": "abc-1"}).matcher.matches("k", "v", headers)
    assert parse("t", {"filter": "TRACE"}).matcher.matches("k", "v", headers)
    assert parse("t", {"regex": r"^Abc-\d+$"}).matcher.matches("k", "v", headers)
    assert parse("t", {"regex": r"^bin$"}).matcher.matches(None, None, headers)
    assert not parse("t", {"regex": r"^abc"}).matcher.matches("k", "v", headers)
    assert not parse("t", {"filter": "zzz"}).matcher.matches("k", "v", headers)


def test_matcher_substring_and_regex_may_match_different_parts():
    m = parse("t", {"filter": "svc", "regex": r"^eu-\w+$"}).matcher
    assert m.matches("svc", "v", [["region", "eu-west"]])
    assert not m.matches("svc", "v", [["region", "us-east"]])


@pytest.mark.parametrize("args,key", [
    ({"max": "²"}, "max"), ({"max": "٣"}, "max"), ({"from": "-²"}, "from"),
    ({"partitions": "¹"}, "partitions"), ({"from": "offsets:0:³"}, "from"),
    ({"from": "offsets:١:0"}, "from"), ({"from": "ts:²"}, "from"), ({"from": "ts:١٧٠٠"}, "from"),
    ({"from": "ts:" + "9" * 5000}, "from"),
])
def test_numbers_are_ascii_digits_only(args, key):
    # str.isdigit() passes superscripts and other scripts' digits; int() then raised ValueError,
    # or (5,000 digits) refused to convert at all: a 500 instead of a close with a reason.
    with pytest.raises(BadRequest) as e:
        parse("t", args)
    assert str(e.value).startswith(key + ":")


@pytest.mark.parametrize("args", [{"filter": "\ud800"}, {"regex": "a\udfff"}])
def test_lone_surrogates_are_refused(args):
    # A JSON control frame can spell them ("\ud800"); the status frame echoing the filter could
    # not be encoded, and the session died with a traceback instead of answering.
    with pytest.raises(BadRequest, match="lone surrogate"):
        parse("t", args)
