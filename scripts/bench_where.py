"""Which CEL library should evaluate ``where=`` (issue #26)? Each CEL library on PyPI that
imports here, beside today's substring filter, on 100-record batches of ~200-byte JSON values
with two headers: what it can express, what it does on errors, what limits it has, and what a
record costs (µs/record). Not part of make bench, and none of these libraries is a dependency:

    python3 -m venv /tmp/celvenv
    /tmp/celvenv/bin/pip install orjson regex cel-python common-expression-language cel-expr-python
    /tmp/celvenv/bin/python scripts/bench_where.py [--quick] [--json out.json]

python-cel and cel-bind install a top-level ``cel`` module too, as common-expression-language
does, so each needs a venv of its own; ``--also PYTHON`` runs this script under that interpreter
and adds its libraries' rows (each process measures its own substring baseline):

    python3 -m venv /tmp/celvenv-pycel && /tmp/celvenv-pycel/bin/pip install orjson python-cel
    python3 -m venv /tmp/celvenv-celbind && /tmp/celvenv-celbind/bin/pip install orjson cel-bind
    /tmp/celvenv/bin/python scripts/bench_where.py \\
        --also /tmp/celvenv-pycel/bin/python --also /tmp/celvenv-celbind/bin/python

What a record costs, per expression:

* build: the activation every library starts from, made from what ``decode_batch`` has (key
  text, value text, decoded headers): ``orjson.loads`` of the value and a dict of 7 names.
  kafkatail keeps no parse of a value (it frames the text), so where= pays this per record.
* convert: the library's own activation from that dict (``cel.Context``, ``env.Activation``,
  ``celpy.json_to_cel``); paid once per record however many viewers' expressions read it.
  cel-expr-python converts a variable lazily, on the first evaluation that reads it, and keeps
  it: its first evaluation of a record pays the conversion of ``value``.
* eval: one compiled expression on an activation already evaluated once, to a bool (an error
  is no match): what each further viewer's expression costs on a shared activation.
* total: build + convert + eval of a fresh record, end to end, one record after another: what a
  record costs one viewer.

The substring baseline is kafkatail's own ``Matcher`` (``needle in text.lower()`` over the key,
the value text and the header names and values), imported from the repository. Cells are
the median (and the minimum) of the repeats; the ratio to the substring filter is of the minima,
which a busy machine disturbs least.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 100

# ---------------------------------------------------------------------------------------------
# The records: what decode_batch hands a filter (key text, value text, headers as the protocol
# sends them), plus partition, offset, timestamp and size.


def _value(i: int) -> dict[str, Any]:
    email = (f"user{i}@example.{'com' if i % 3 else 'org'}" if i % 5 else f"User{i}@Other.net")
    amount: int | float = (i * 37) % 3000 if i % 3 else (i * 37) % 3000 + 0.5  # ints and doubles
    value: dict[str, Any] = {
        "order_id": 500000 + i,
        "user": {"id": 42 if i % 2 == 0 else 1000 + i, "name": f"user {i}", "email": email},
        "amount": amount, "currency": "EUR", "status": ("paid", "created", "refunded")[i % 3],
        "created": f"2026-12-06T20:{i % 60:02d}:00.{i:03d}Z",
        "items": [{"sku": f"sku-{i % 7}", "qty": 1 + i % 4}],
    }
    if i % 10 == 0:  # the field of the "missing field" expression: absent from 90% of records
        value["coupon"] = {"code": "SPRING" if i % 20 == 0 else "FALL"}
    return value


RAW = []  # (key, value text, headers, partition, offset, timestamp, size)
for _i in range(BATCH):
    _text = json.dumps(_value(_i), separators=(",", ":"))
    _headers = [["trace-id", "abc" if _i % 4 < 2 else f"{_i * 7919:016x}"],
                ["source", "web" if _i % 3 else "mobile"]]
    RAW.append((f"order-{_i}", _text, _headers, _i % 3, 1000 + _i, 1764700000000 + _i,
                len(_text) + 9 + 30))


def build(rec: tuple) -> dict[str, Any]:
    """The activation as a Python dict: the value parsed (JSON; a text value stays a string),
    headers as a map of name to value."""
    key, text, headers, partition, offset, timestamp, size = rec
    return {"key": key, "value": orjson.loads(text), "headers": {h[0]: h[1] for h in headers},
            "partition": partition, "offset": offset, "timestamp": timestamp, "size": size}


ACTS = [build(r) for r in RAW]

# name: (CEL source, the same test in Python, for the check that a library agrees)
EXPRS: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "nested ==": ('value.user.id == 42', lambda a: a["value"]["user"]["id"] == 42),
    "&& header": ('value.user.id == 42 && headers["trace-id"] == "abc"',
                  lambda a: a["value"]["user"]["id"] == 42 and a["headers"]["trace-id"] == "abc"),
    "int > 1000.0": ('value.amount > 1000.0', lambda a: a["value"]["amount"] > 1000.0),
    "matches": ('value.user.email.matches("^[a-z0-9.]+@example\\\\.(com|org)$")',
                lambda a: re.search(r"^[a-z0-9.]+@example\.(com|org)$",
                                    a["value"]["user"]["email"]) is not None),
    "missing field": ('value.coupon.code == "SPRING"',
                      lambda a: a["value"].get("coupon", {}).get("code") == "SPRING"),
}

# ---------------------------------------------------------------------------------------------
# The baseline: kafkatail's substring filter.


def _substring_matcher(needle: str) -> Callable[[str | None, str | None, list], bool]:
    try:
        from kafkatail.tail.request import Matcher
    except ImportError:
        sys.path.insert(0, ROOT)
        try:
            from kafkatail.tail.request import Matcher
        except ImportError:  # no `regex` in this venv: the same lines as Matcher._contains
            def contains(key: str | None, value: str | None, headers: list) -> bool:
                if (key and needle in key.lower()) or (value and needle in value.lower()):
                    return True
                return bool(headers) and any(text and needle in text.lower()
                                             for h in headers for text in h[:2])
            return contains
    return Matcher(needle.lower()).matches


# ---------------------------------------------------------------------------------------------
# The libraries. Each adapter: load() imports (raising Skip with the reason), compile(src),
# convert(dict), evaluate(program, converted) -> the raw result (may raise), matches(...) -> bool
# with every error a non-match, and position(exc) -> "line:col" of a syntax error.


class Skip(Exception):
    pass


def _cel_provider() -> str | None:
    """Which distribution installed the top-level ``cel`` module (three do)."""
    dist = next(iter(metadata.packages_distributions().get("cel", [])), None)
    return dist.lower().replace("_", "-") if dist else None


class Lib:
    name = dist = kind = ""

    def version(self) -> str:
        return metadata.version(self.dist)

    def load(self) -> None: ...
    def compile(self, src: str) -> Any: ...
    def convert(self, act: dict[str, Any]) -> Any: ...
    def evaluate(self, prog: Any, conv: Any) -> Any: ...
    def matches(self, prog: Any, conv: Any) -> bool: ...

    def position(self, exc: BaseException) -> str:
        m = re.search(r"<input>:(-?\d+):(-?\d+)", str(exc))
        return f"{m[1]}:{m[2]}" if m else "-"


class RustCel(Lib):
    name, dist, kind = "common-expression-language", "common-expression-language", "Rust (cel-rust, PyO3)"

    def load(self) -> None:
        if _cel_provider() != self.dist:
            raise Skip(f"not installed (`cel` is {_cel_provider()})")
        self.cel = importlib.import_module("cel")

    def compile(self, src: str) -> Any:
        return self.cel.compile(src)  # ValueError on a syntax error

    def convert(self, act: dict[str, Any]) -> Any:
        return self.cel.Context(variables=act)

    def evaluate(self, prog: Any, conv: Any) -> Any:
        return prog.execute(conv)

    def matches(self, prog: Any, conv: Any) -> bool:
        try:
            return prog.execute(conv) is True
        except Exception:  # KeyError, TypeError, IndexError, ValueError, RuntimeError...
            return False


class CppCel(Lib):
    name, dist, kind = "cel-expr-python", "cel-expr-python", "C++ (Google cel-cpp, pybind11)"

    def load(self) -> None:
        try:
            from cel_expr_python import cel
        except ImportError as exc:
            raise Skip(f"not installed ({exc})") from None
        self.cel = cel
        T = cel.Type
        self.env = cel.NewEnv(variables={
            "key": T.DYN, "value": T.DYN, "headers": T.Map(T.STRING, T.DYN),
            "partition": T.INT, "offset": T.INT, "timestamp": T.INT, "size": T.INT})

    def compile(self, src: str) -> Any:
        return self.env.compile(src)  # RuntimeError on a syntax or type error

    def convert(self, act: dict[str, Any]) -> Any:
        return self.env.Activation(act)

    def evaluate(self, prog: Any, conv: Any) -> Any:
        result = prog.eval(conv)  # an evaluation error is a Value of type ERROR, not raised
        return result.value() if result.type() != self.cel.Type.ERROR else _Err(result.value())

    def matches(self, prog: Any, conv: Any) -> bool:
        try:
            return prog.eval(conv).value() is True  # an ERROR's value() is its message
        except RuntimeError:  # the iteration budget, a conversion error
            return False


class _Err(Exception):
    """cel-expr-python's evaluation error, a value it returns (shown as an error)."""


class CelPy(Lib):
    name, dist, kind = "cel-python", "cel-python", "pure Python (cloud-custodian, Lark)"

    def load(self) -> None:
        try:
            self.celpy = importlib.import_module("celpy")
            self.celtypes = importlib.import_module("celpy.celtypes")
        except ImportError as exc:
            raise Skip(f"not installed ({exc})") from None
        self.env = self.celpy.Environment()

    def compile(self, src: str) -> Any:
        return self.env.program(self.env.compile(src))  # CELParseError(.line, .column)

    def convert(self, act: dict[str, Any]) -> Any:
        to_cel = self.celpy.json_to_cel
        return {name: to_cel(v) for name, v in act.items()}

    def evaluate(self, prog: Any, conv: Any) -> Any:
        return prog.evaluate(conv)

    def matches(self, prog: Any, conv: Any) -> bool:
        try:
            result = prog.evaluate(conv)
        except Exception:  # CELEvalError; RecursionError on deep expressions
            return False
        return isinstance(result, self.celtypes.BoolType) and bool(result)

    def position(self, exc: BaseException) -> str:
        line, col = getattr(exc, "line", None), getattr(exc, "column", None)
        return f"{line}:{col}" if line is not None else "-"


class PythonCel(Lib):
    name, dist, kind = "python-cel", "python-cel", "Rust (cel-interpreter 0.9, PyO3)"

    def load(self) -> None:
        if _cel_provider() != self.dist:
            raise Skip(f"not installed here (`cel` is {_cel_provider()}): try --also")
        self.cel = importlib.import_module("cel")

    def compile(self, src: str) -> Any:
        return self.cel.Program(src)

    def convert(self, act: dict[str, Any]) -> Any:
        return self.cel.Context(act)

    def evaluate(self, prog: Any, conv: Any) -> Any:
        return prog.execute(conv)

    def matches(self, prog: Any, conv: Any) -> bool:
        try:
            return prog.execute(conv) is True
        except Exception:
            return False
        except BaseException as exc:  # a Rust panic (1/0) is pyo3's PanicException
            if type(exc).__name__ == "PanicException":
                return False
            raise

    def position(self, exc: BaseException) -> str:
        m = re.search(r"at \[(\d+):(\d+)\]", str(exc))  # 0-based
        return f"{int(m[1]) + 1}:{int(m[2]) + 1}" if m else "-"


class CelBind(Lib):
    name, dist, kind = "cel-bind", "cel-bind", "C++ (cel-cpp, reduced bindings)"

    def load(self) -> None:
        if _cel_provider() != self.dist:
            raise Skip(f"not installed here (`cel` is {_cel_provider()}): try --also")
        cel = importlib.import_module("cel")
        try:
            cel.Compiler(cel.DescriptorPool(), {"value": cel.StringType()}, None) \
               .compile_to_checked_expr("value.user.id == 42")
        except RuntimeError as exc:
            raise Skip("cannot express where=: variables are scalars, lists or JSON-Schema "
                       "messages, no map or dyn type, so neither a schemaless JSON value nor "
                       f"the headers map can be declared: {str(exc).splitlines()[0]}")


LIBS: list[Lib] = [RustCel(), CppCel(), CelPy(), PythonCel(), CelBind()]

# ---------------------------------------------------------------------------------------------
# What each can express, and what it does on errors.

PROBE_ACT = {"key": "k1", "value": {"user": {"id": 42, "name": "Ann"}, "amount": 1500,
                                    "status": "paid", "tags": ["a", "b"]},
             "headers": {"trace-id": "abc", "source": "web"}, "partition": 0, "offset": 7,
             "timestamp": 1764700000000, "size": 200}
PROBES = [
    'value.user.id == 42 && headers["trace-id"] == "abc"',
    'value.amount > 1000.0',       # amount is the int 1500
    'value.amount == 1500.0',
    'value.amount > 1000',
    'offset > 1.5',                # a declared int against a double
    'value.user.id == 42u',
    'value.user.id + 1 == 43',     # arithmetic on a JSON int
    'has(value.user)',
    'has(value.nope)',
    'value.status.contains("ai") && value.status.startsWith("pa")',
    'value.status.matches("^p.*d$")',
    'value.tags.exists(t, t == "b")',
    'value.nope == 1',             # missing field
    'headers["nope"] == "x"',      # missing header
    'value.status > 1',            # wrong type
    'value.status == 1',           # CEL: heterogeneous equality is false, not an error
    'value.tags[5] == "x"',        # index out of range
    'value.nope == 1 || true',     # an error absorbed by ||, either side
    '1 / 0 == 1',
    'value.status.matches("(")',   # a bad regex: found at compile time or per record?
    'nope == 1',                   # an undeclared name
]
SYNTAX = ['value.user.id == ', 'value.user.id === 42', 'headers["x"', 'a && && b']


def _outcome(lib: Lib, src: str) -> str:
    try:
        prog = lib.compile(src)
    except Exception as exc:
        return f"compile error: {type(exc).__name__}"
    try:
        result = lib.evaluate(prog, lib.convert(PROBE_ACT))
    except BaseException as exc:  # python-cel's PanicException is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        return f"error: {type(exc).__name__}"
    if isinstance(result, _Err):
        return "error value"
    if type(result).__name__ == "BoolType":  # cel-python's bool
        result = bool(result)
    return {True: "true", False: "false"}.get(result, repr(result)) \
        if isinstance(result, bool) else str(result)


def _syntax(lib: Lib, src: str) -> dict[str, str]:
    try:
        lib.compile(src)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return {"class": f"{type(exc).__module__}.{type(exc).__name__}",
                "message": text[0][:140] if text else "", "position": lib.position(exc)}
    return {"class": "-", "message": "(compiled)", "position": "-"}


def _limits(lib: Lib) -> dict[str, str]:
    """No library has a cost budget to set: what happens on 12,100 comprehension iterations
    (cel-cpp stops at 10,000), on deep nesting, and how long each took."""
    out = {}
    cases = {
        "110x110 comprehension": ("value.l.all(x, value.l.all(y, x + y >= 0))",
                                  {"value": {"l": list(range(110))}}),
        "40-deep parentheses": ("(" * 40 + "value == 1" + ")" * 40, {"value": 1}),
        "40-term + chain": ("value" + " + 1" * 40 + " > 0", {"value": 1}),
    }
    for name, (src, act) in cases.items():
        t = time.perf_counter()
        try:
            prog = lib.compile(src)
            result = lib.evaluate(prog, lib.convert(act))
            what = "error value" if isinstance(result, _Err) else f"ran: {result}"
        except Exception as exc:
            what = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:48]}"
        out[name] = f"{what} ({(time.perf_counter() - t) * 1e3:.0f} ms)"
    return out


def _gil(lib: Lib) -> str:
    """Does an evaluation let other threads run? One long evaluation (a regex over a 40 MB
    string) while another thread counts in a loop: the count it reaches during the call,
    against the count in as long a time with the main thread idle. A few per cent (what the
    5 ms switch interval lets in around the call) means the GIL is held throughout."""
    prog = lib.compile('value.s.matches("(a|b)*c") || value.s.contains("abc")')
    conv = lib.convert({"value": {"s": "ab" * 20_000_000}})
    lib.evaluate(prog, conv)  # cel-expr-python converts on the first evaluation
    count, stop = [0], []

    def spin() -> None:
        while not stop:
            count[0] += 1
    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.05)
    c0, t = count[0], time.perf_counter()
    lib.evaluate(prog, conv)
    took, c1 = time.perf_counter() - t, count[0]
    time.sleep(took)
    c2 = count[0]
    stop.append(True)
    thread.join()
    del conv
    return f"{100 * (c1 - c0) / max(c2 - c1, 1):.0f}% ({took * 1e3:.0f} ms call)"


# ---------------------------------------------------------------------------------------------
# Timing.


def _time(cases: dict[str, Callable[[], Any]], repeats: int, target: float) -> dict[str, list]:
    """µs/record of each case (one call = one 100-record batch), interleaved across repeats so
    a noisy neighbour hits every case alike; each repeat runs a case for about ``target`` s."""
    calls = {}
    for name, fn in cases.items():
        t = time.perf_counter()
        fn()
        calls[name] = max(1, int(target / max(time.perf_counter() - t, 1e-9)))
    out: dict[str, list] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            n = calls[name]
            t = time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append((time.perf_counter() - t) / n / BATCH * 1e6)
    return out


def measure(repeats: int, target: float) -> dict[str, Any]:
    absent, present = _substring_matcher("no-such-text"), _substring_matcher("example")
    cases: dict[str, Callable[[], Any]] = {
        "substring, not found": lambda: [absent(r[0], r[1], r[2]) for r in RAW],
        "substring, found in value": lambda: [present(r[0], r[1], r[2]) for r in RAW],
        "build": lambda: [build(r) for r in RAW],
    }
    libs: dict[str, Any] = {}
    for lib in LIBS:
        info: dict[str, Any] = {"dist": lib.dist, "kind": lib.kind}
        libs[lib.name] = info
        try:
            lib.load()
            info["version"] = lib.version()
        except Skip as skip:
            info["skipped"] = str(skip)
            continue
        info["probes"] = {src: _outcome(lib, src) for src in PROBES}
        info["syntax"] = {src: _syntax(lib, src) for src in SYNTAX}
        info["limits"] = _limits(lib)
        convs = [lib.convert(a) for a in ACTS]
        info["agree"] = {}
        for name, (src, ref) in EXPRS.items():
            prog = lib.compile(src)
            got = [lib.matches(prog, c) for c in convs]
            want = []
            for a in ACTS:
                try:
                    want.append(bool(ref(a)))
                except (KeyError, TypeError):
                    want.append(False)
            info["agree"][name] = {"matched": sum(got),
                                   "differ": sum(g != w for g, w in zip(got, want))}
            m, conv = lib.matches, lib.convert
            cases[f"{lib.name}|{name}|eval"] = (
                lambda m=m, prog=prog, convs=convs: [m(prog, c) for c in convs])
            cases[f"{lib.name}|{name}|total"] = (
                lambda m=m, prog=prog, conv=conv: [m(prog, conv(build(r))) for r in RAW])
        cases[f"{lib.name}||convert"] = lambda conv=lib.convert: [conv(a) for a in ACTS]
        info["gil"] = _gil(lib)
        src = EXPRS["&& header"][0]
        runs = []
        for _ in range(20):
            t = time.perf_counter()
            lib.compile(src)
            runs.append((time.perf_counter() - t) * 1e6)
        info["compile_us"] = statistics.median(runs)
    timing = {name: {"median": statistics.median(us), "min": min(us)}
              for name, us in _time(cases, repeats, target).items()}
    return {"python": sys.version.split()[0], "libs": libs, "timing": timing,
            "value_bytes": sum(len(r[1]) for r in RAW) / BATCH}


# ---------------------------------------------------------------------------------------------
# Report.


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa
    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def report(runs: list[dict[str, Any]]) -> str:
    out = []
    libs: dict[str, tuple[dict, dict]] = {}  # name -> (info, its run)
    for run in runs:
        for name, info in run["libs"].items():
            # a library is reported from the run where it is installed
            if name not in libs or libs[name][0].get("skipped", "").startswith("not installed"):
                libs[name] = (info, run)
    usable = [n for n, (i, _) in libs.items() if "skipped" not in i]

    out.append("Libraries\n")
    out.append(rst_table(["library", "version", "kind", "status"], [
        [n, i.get("version", "-"), i["kind"], i.get("skipped", f"measured (Python {r['python']})")]
        for n, (i, r) in libs.items()]))

    out.append("\nWhat each returns on one record (value.amount is the int 1500)\n")
    out.append(rst_table(["expression", *usable], [
        [src, *(libs[n][0]["probes"][src] for n in usable)] for src in PROBES]))

    out.append("\nSyntax errors: exception class, position (line:col), message\n")
    rows = []
    for src in SYNTAX:
        for n in usable:
            s = libs[n][0]["syntax"][src]
            rows.append([src, n, s["class"], s["position"], s["message"][:90]])
    out.append(rst_table(["expression", "library", "class", "pos", "message"], rows))

    out.append("\nCompile time, limits (no library offers a cost budget to set), and the GIL: "
               "how fast another thread runs during one long evaluation\n")
    names = list(next(iter(libs[n][0]["limits"] for n in usable), {}))
    rows = [[n, f"{libs[n][0]['compile_us']:.0f} µs", *(libs[n][0]["limits"][k] for k in names),
             libs[n][0]["gil"]] for n in usable]
    out.append(rst_table(["library", "compile &&", *names, "other thread runs"], rows))

    for run in runs:
        t = run["timing"]
        base = t["substring, not found"]["min"]  # ratios of the minima: the least noisy
        mine = [n for n in usable if libs[n][1] is run]
        if not mine:
            continue
        out.append(f"\nµs/record, {BATCH}-record batches of {run['value_bytes']:.0f}-byte JSON "
                   f"values + 2 headers, median (min) (Python {run['python']})\n")
        fmt = lambda k: f"{t[k]['median']:.2f} ({t[k]['min']:.2f})"  # noqa: E731
        rows = [["substring filter (Matcher)", "not found", "-", "-", "-", "-",
                 fmt("substring, not found"), "1"],
                ["substring filter (Matcher)", "found in value", "-", "-", "-", "-",
                 fmt("substring, found in value"),
                 f"{t['substring, found in value']['min'] / base:.1f}"]]
        for n in mine:
            agree = libs[n][0]["agree"]
            for name in EXPRS:
                a = agree[name]
                ok = f"{a['matched']}" + (" ok" if not a["differ"] else f" ({a['differ']} wrong)")
                total = t[f"{n}|{name}|total"]["min"]
                rows.append([n, name, ok, fmt("build"), fmt(f"{n}||convert"),
                             fmt(f"{n}|{name}|eval"), fmt(f"{n}|{name}|total"),
                             f"{total / base:.0f}"])
        out.append(rst_table(["library", "expression", "matched", "build", "convert", "eval",
                              "total", "x substring (min)"], rows))
    out.append("\nExpressions:")
    out.extend(f"  {name:14s} {src}" for name, (src, _) in EXPRS.items())
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    ap.add_argument("--also", action="append", default=[], metavar="PYTHON",
                    help="also run under this interpreter (a venv with another `cel`)")
    ap.add_argument("--json", metavar="PATH", help="write the raw results here")
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)  # child: JSON out
    args = ap.parse_args()
    repeats, target = (3, 0.03) if args.quick else (9, 0.15)
    runs = [measure(repeats, target)]
    if args.raw:
        print(json.dumps(runs[0]))
        return
    for python in args.also:
        cmd = [python, os.path.abspath(__file__), "--raw"] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{python}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(report(runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
