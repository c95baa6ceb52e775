"""Mutation check (issue #29): does each test still catch the bug it guards against?

Each mutation below puts one fixed bug back into the code as an exact text replacement (file,
old snippet, new snippet). For each, one at a time, in a scratch copy of the repository (a
``git worktree`` of HEAD, or with ``--working-tree`` a copy of the files as they are now): apply
it, run the tests that should catch it from the scratch directory, revert it, and record killed
(a test failed), survived (the tests passed), error (pytest could not collect or run them:
not a kill) or timeout. A table of the results is printed at the end and, with ``--rst``,
written as an RST table so README's table can be regenerated from it.

Why: a guard test that no longer catches its bug passes silently, and a refactor can make a
mutation a no-op just as silently, so an old snippet that is not found exactly once stops the
run before any test runs. ``python -m pytest`` puts its cwd first on sys.path, and the servers
the regression tests start (``python -m kafkatail serve``) inherit that cwd, so every process
imports the mutated ``kafkatail``; the run checks this before the first mutation.

Not in CI and not part of ``make test``: ``make mutants`` (``MUTANTS_ARGS="-k sigterm"``).

    python scripts/mutants.py --list
    python scripts/mutants.py -k pings --baseline --rst mutants.rst
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_S = 120
STOP_GRACE_S = 30

SERVER = "tests/regression/test_server_process.py::"
FAULTS = "tests/regression/test_faults.py::"
CHURN = SERVER + "test_churn_500_tails_five_ways_returns_to_baseline[gthread]"
IDLE = SERVER + "test_idle_tails_cost_no_cpu[gthread]"
SIGTERM = SERVER + "test_sigterm_with_100_tails_closes_1001_and_exits_0[gthread]"
OUTAGE = SERVER + "test_broker_outage_with_50_tails[gthread]"
HALF_OPEN = FAULTS + "test_half_open_peers_are_reaped_by_pings[gthread]"
SLOW = FAULTS + "test_slow_consumer_with_50k_records[gthread]"
DELETED = FAULTS + "test_topic_deleted_while_tailed_closes_4404[gthread]"
CPU_GEVENT = FAULTS + "test_cpu_attributed_to_the_hot_feed[gevent]"
SCHEMAS = "tests/unit/test_schemas_decoding.py::"
STOP_EVENT = ("tests/integration/test_stop_event.py::test_release_ends_a_thread_by_its_stop_event",
              "tests/regression/test_stop_event.py::"
              "test_sigterm_ends_feeds_stuck_on_readers_that_never_read")


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str                # what -k matches (with the summary)
    summary: str             # the table's text (RST)
    path: str                # relative to the repository
    old: str                 # must occur exactly once in path
    new: str
    tests: tuple[str, ...]   # pytest node ids, the quickest first (the run stops at a failure)


MUTATIONS = [
    # -- issue #29 ---------------------------------------------------------------------------
    # stop() asks nothing of the thread: only a thread that ends by itself ever ends.
    Mutation("stop-sets-no-event", "``ConsumerThread.stop()`` sets no Event",
             "kafkatail/tail/consumer.py",
             "def stop(self) -> None:\n        self._stop_event.set()",
             "def stop(self) -> None:\n        pass",
             STOP_EVENT),
    # The loop never looks at its stop Event (the Event is still set, the thread still runs).
    Mutation("loop-ignores-stop", "consumer loop is ``while True``",
             "kafkatail/tail/consumer.py",
             "while not stop.is_set():", "while True:",
             STOP_EVENT),
    # The reaper releases every tail, not just those whose owner thread has died.
    Mutation("reaper-reaps-live-tails", "reaper skips the owner-alive check",
             "kafkatail/tail/pool.py",
             "if viewer.owner.is_alive():", "if False:",
             ("tests/integration/test_reaper_restraint.py::"
              "test_a_reaper_pass_leaves_live_tails_alone",)),
    # outbox_full_policy = "disconnect" behaves as drop-oldest.
    Mutation("disconnect-policy-drops", "``disconnect`` policy drops the oldest instead",
             "kafkatail/tail/outbox.py",
             "if self.policy == DISCONNECT:", "if False:",
             ("tests/integration/test_slow_and_dead.py::"
              "test_disconnect_policy_closes_1008_with_reason",)),
    # A batch of exactly the remaining count does not end the tail: max=N ends one batch late.
    Mutation("max-off-by-one", "``max=`` off by one (``>`` for ``>=``)",
             "kafkatail/tail/feed.py",
             "len(batch) >= v.remaining", "len(batch) > v.remaining",
             ("tests/integration/test_protocol.py::test_max_delivers_exactly_n_across_batches",)),
    # -- README's table ("Each scenario was shown to catch the bug it guards") --------------
    # The original outage: the thread blocks in kafka-python's iterator (no timeout) until a
    # record arrives, so it never sees its stop Event on a quiet topic.
    Mutation("for-msg-in-consumer", "``for msg in consumer`` instead of ``poll(timeout_ms)``",
             "kafkatail/tail/consumer.py",
             "polled = consumer.poll(timeout_ms=gathering.poll_ms(poll_ms))",
             "msg = next(consumer.consumer)\n"
             "                polled = {TopicPartition(msg.topic, msg.partition): [msg]}",
             (SIGTERM, DELETED, HALF_OPEN, CHURN)),
    # No WebSocket pings: a peer that vanished without FIN/RST, or never reads, is never reaped.
    Mutation("pings-off", "pings off (the Pinger never started)",
             "kafkatail/app.py",
             "    pinger.start()\n", "",
             (HALF_OPEN, CHURN)),
    # A session whose thread ended without closing it sleeps out its long safety timeout.
    Mutation("reaper-wakes-no-session", "the reaper's pass wakes no session",
             "kafkatail/tail/pool.py",
             "viewer.outbox.wake()  # its thread ended", "pass  # its thread ended",
             ("tests/integration/test_observability.py::"
              "test_reaper_wakes_a_session_whose_thread_ended_without_closing_it",)),
    # A feed keeps its last viewer after release, so neither the release (feed_linger_s 0) nor
    # the linger in the loop stops it. Dedicated threads are unaffected.
    Mutation("feed-keeps-last-viewer", "feed not stopped by its last viewer",
             "kafkatail/tail/feed.py",
             "self.viewers = tuple(v for v in self.viewers if v is not viewer)",
             "self.viewers = tuple(v for v in self.viewers\n"
             "                                 if v is not viewer or self.replay_records)",
             (HALF_OPEN, CHURN)),
    # One consumer per tail again.
    Mutation("feeds-not-shared", "``share_live_feeds`` default false",
             "kafkatail/config.py",
             'Field("share_live_feeds", bool, True,', 'Field("share_live_feeds", bool, False,',
             (IDLE, OUTAGE)),
    # gunicorn's own SIGTERM handler stays: the worker exits without closing its tails (1001).
    Mutation("no-sigterm-handler", "no SIGTERM handler in the worker",
             "kafkatail/workers/lifecycle.py",
             "self._stopping = self.run_aside(self.stop_tails)", "pass",
             (SIGTERM,)),
    # kafkafix fix 1: a refused connect leaves its socket open until the cyclic GC runs (the
    # patch is still applied, so fix 3, closing what a closed selector's connects made, stays).
    Mutation("connect-leaves-socket", "kafkafix connect patch off (refused socket left open)",
             "kafkatail/tail/kafkafix.py",
             "    except BaseException:\n        sock.close()\n        raise",
             "    except BaseException:\n        raise",
             (OUTAGE,)),
    # The outbox grows without bound: neither max_records nor the byte caps apply a policy.
    Mutation("outbox-unbounded", "unbounded outbox (full policy never applied)",
             "kafkatail/tail/outbox.py",
             "if self._records > self.max_records or (was_behind and self._over_bytes()):",
             "if False:",
             (SLOW,)),
    # kafkafix fix 2: metadata requests ask the broker to create the assigned topic again.
    Mutation("auto-create-patch-off", "kafkafix auto-create patch off",
             "kafkatail/tail/kafkafix.py",
             'if "allow_auto_create_topics" in configs:', "if False:",
             (DELETED,)),
    # A deleted topic looks like an unreachable broker: broker-unavailable, never 4404.
    Mutation("no-deletion-check", "no deletion check in the consumer loop",
             "kafkatail/tail/consumer.py",
             "if watch.absent >= 2:", "if False:",
             (DELETED,)),
    # A switch's CPU goes to the greenlet switched to, not the one that used it.
    Mutation("greencpu-charges-target", "greencpu charges the switched-to greenlet",
             "kafkatail/ops/greencpu.py",
             "origin = args[0]", "origin = args[1]",
             (CPU_GEVENT,)),
    # A hung registry: every poll waits for the same fetch again, not once.
    Mutation("registry-waits-every-poll", "a feed waits for a fetch it already waited for",
             "kafkatail/schemas/decoding.py",
             "        if not fetch.waited:", "        if True:",
             (SCHEMAS + "test_a_hung_registry_costs_one_wait_then_none",)),
    # A registry that is down is asked again for every record.
    Mutation("registry-failure-forgotten", "a registry failure is not remembered",
             "kafkatail/schemas/decoding.py",
             "                if failed[0] > time.monotonic():",
             "                if False:",
             (SCHEMAS + "test_a_registry_down_is_retried_after_a_short_pause_only",
              SCHEMAS + "test_an_unknown_id_is_remembered_and_not_asked_again_at_once")),
]


class MutationError(Exception):
    """A mutation cannot be applied as written (its old snippet is gone or ambiguous)."""


@dataclasses.dataclass
class Row:
    mutation: Mutation
    result: str          # killed, survived, skipped, error, timeout
    seconds: float
    caught_by: str       # the first failing test (killed), or why not


# -- the mutations ---------------------------------------------------------------------------
def select_mutations(pattern: str | None) -> list[Mutation]:
    if not pattern:
        return list(MUTATIONS)
    p = pattern.lower()
    return [m for m in MUTATIONS if p in m.name.lower() or p in m.summary.lower()]


def snippet_problem(text: str | None, m: Mutation) -> str | None:
    """Why ``m`` cannot be applied to ``text`` (its file's content), or None if it can."""
    if text is None:
        return f"{m.name}: {m.path} does not exist"
    n = text.count(m.old)
    if n != 1:
        return f"{m.name}: old snippet found {n} times in {m.path} (must be exactly once):\n" \
               + "\n".join("    " + line for line in m.old.splitlines())
    return None


def read_or_none(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


@contextlib.contextmanager
def mutated(root: Path, m: Mutation) -> Iterator[None]:
    """``m`` applied to the copy at ``root``, reverted on the way out whatever happens."""
    path = root / m.path
    original = read_or_none(path)
    problem = snippet_problem(original, m)
    if problem:
        raise MutationError(problem)
    assert original is not None
    text = original.replace(m.old, m.new, 1)
    try:
        compile(text, str(path), "exec")
    except SyntaxError as exc:
        raise MutationError(f"{m.name}: {m.path} does not compile mutated: {exc}") from None
    path.write_text(text)
    try:
        yield
    finally:
        path.write_text(original)


# -- the scratch copy ------------------------------------------------------------------------
def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True, timeout=GIT_TIMEOUT_S).stdout


@contextlib.contextmanager
def scratch_copy(working_tree: bool) -> Iterator[Path]:
    """A scratch copy of the repository: a detached worktree of HEAD, or the tracked and
    untracked (not ignored) files as they are now. Removed on the way out, whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="kafkatail-mutants-"))
    added = False
    try:
        if working_tree:
            copy_working_tree(root)
        else:
            git("worktree", "add", "--detach", str(root), "HEAD")
            added = True
        yield root
    finally:
        if added:
            try:
                git("worktree", "remove", "--force", str(root))
            except subprocess.SubprocessError as exc:
                print(f"git worktree remove failed ({exc}); removing by hand", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
        if added:
            git("worktree", "prune")


def copy_working_tree(root: Path) -> None:
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # tracked, deleted in the working tree
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)


def pytest_env() -> dict[str, str]:
    """The environment for runs in the scratch copy: cwd first on sys.path, and no bytecode
    cache, whose mtime check could hand a same-size edit made within a second its old code."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", COLUMNS="400")  # whole summary lines
    env.pop("PYTHONSAFEPATH", None)
    return env


def check_imports_from(root: Path) -> None:
    """Fail unless ``kafkatail`` imported from the scratch directory is the scratch copy's."""
    out = subprocess.run([sys.executable, "-c", "import kafkatail; print(kafkatail.__file__)"],
                         cwd=root, env=pytest_env(), capture_output=True, text=True, timeout=60,
                         check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"kafkatail imports from {out}, not from the scratch copy {root}")
    print(f"kafkatail imports from the scratch copy: {out}")


# -- running tests ---------------------------------------------------------------------------
@dataclasses.dataclass
class PytestRun:
    returncode: int | None   # None: timed out
    seconds: float
    output: str


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGINT to the run's own process group (pytest tears its servers and broker down), then
    SIGKILL to whatever is left of it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_GRACE_S)


def run_tests(root: Path, tests: tuple[str, ...], timeout: float, log: Path) -> PytestRun:
    """pytest on ``tests`` from ``root``, stopping at the first failure; output to ``log``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-p", "no:cacheprovider", "-rfE",
           "--color=no", *tests]
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=pytest_env(), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            returncode = None
            stop_process_group(proc)
        except BaseException:
            stop_process_group(proc)
            raise
        # Anything the run left behind in its group (a server it failed to stop).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text(errors="replace").replace(f"{root}/", "")
    return PytestRun(returncode, time.monotonic() - t0, output)


MESSAGE_CHARS = 60
SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", re.M)
COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")


def first_failure(output: str) -> str:
    """The first FAILED/ERROR line of pytest's short summary, as 'test: message'."""
    found = SUMMARY_LINE.search(output)
    if not found:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "no output"
    kind, node, message = found.groups()
    if message and len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS - 3] + "..."
    where = short_name(node)
    if kind == "ERROR" and f"ERROR at setup of {where}" in output:
        where += " (setup error)"
    return f"{where}: {message}" if message else where


def counts(output: str) -> dict[str, int]:
    """pytest's final tally ('3 passed, 1 skipped in ...'), by outcome."""
    tail = [ln for ln in output.splitlines() if re.search(r" in [\d.]+s", ln)]
    return {k.rstrip("s") if k.startswith("error") else k: int(n)
            for n, k in COUNTS.findall(tail[-1] if tail else "")}


def classify(run: PytestRun) -> tuple[str, str]:
    """(result, caught by) for a run with the mutation applied."""
    if run.returncode is None:
        return "timeout", "no result within the timeout"
    if run.returncode == 1:
        return "killed", first_failure(run.output)
    if run.returncode == 0:
        c = counts(run.output)
        if not c.get("passed"):
            return "skipped", f"all {c.get('skipped', 0)} skipped"
        return "survived", f"{c['skipped']} skipped" if c.get("skipped") else ""
    # 2: interrupted or collection error, 3: internal error, 4: usage (no such test), 5: none run
    errors = [ln[len("ERROR: "):] for ln in run.output.splitlines() if ln.startswith("ERROR: ")]
    return "error", f"pytest exit {run.returncode}: " + (errors[0] if errors
                                                          else first_failure(run.output))


def short_name(node: str) -> str:
    return node.rsplit("::", 1)[-1]


# -- the tables ------------------------------------------------------------------------------
HEADER = ("mutation", "tests", "result", "seconds", "caught by")


def table_cells(rows: list[Row], rst: bool) -> list[list[list[str]]]:
    """Per row, per column, the cell's lines (a cell may span lines: one test per line)."""
    def text(s: str) -> str:
        return rst_escape(s) if rst else s

    def literal(s: str) -> str:
        return f"``{s}``" if rst else s

    out = []
    for r in rows:
        caught = r.caught_by
        if rst and r.result == "killed" and ": " in caught:
            test, message = caught.split(": ", 1)
            caught = f"{literal(test)}: {text(message)}"
        elif rst:
            caught = text(caught)
        out.append([[r.mutation.summary if rst else r.mutation.name],
                    [literal(short_name(t)) for t in r.mutation.tests],
                    [r.result], [f"{r.seconds:.0f}"], [caught]])
    return out


def rst_escape(s: str) -> str:
    """Plain text that RST's inline markup leaves alone."""
    s = re.sub(r"([\\*`|])", r"\\\1", s)
    return re.sub(r"_(?=\W|$)", r"\\_", s)


def render_table(rows: list[Row], rst: bool) -> str:
    """An RST simple table (rst=True), or the same layout as plain text for the terminal."""
    cells = table_cells(rows, rst)
    widths = [max([len(HEADER[i])] + [len(line) for row in cells for line in row[i]])
              for i in range(len(HEADER))]
    rule = "  ".join("=" * w for w in widths)

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()

    lines = [rule, line(list(HEADER)), rule]
    for row in cells:
        for k in range(max(len(c) for c in row)):
            lines.append(line([c[k] if k < len(c) else "" for c in row]))
    lines.append(rule)
    return "\n".join(lines) + "\n"


# -- the run ---------------------------------------------------------------------------------
def list_mutations(mutations: list[Mutation], working_tree: bool) -> int:
    """Print each mutation and its tests, checking its snippet against what a run would use."""
    problems = 0
    for m in mutations:
        problem = snippet_problem(source_text(m.path, working_tree), m)
        problems += problem is not None
        print(f"{m.name}: {m.summary}\n    {m.path}: {'ok' if not problem else 'PROBLEM'}")
        for t in m.tests:
            missing = source_text(t.split("::", 1)[0], working_tree) is None
            print(f"    {t}{'  (file does not exist yet)' if missing else ''}")
        if problem:
            print("    " + problem.replace("\n", "\n    "))
    return 1 if problems else 0


def source_text(rel: str, working_tree: bool) -> str | None:
    """A file's content as a run would see it: HEAD's, or the working tree's."""
    if working_tree:
        return read_or_none(REPO / rel)
    try:
        return git("show", f"HEAD:{rel}")
    except subprocess.CalledProcessError:
        return None


def run_mutation(root: Path, m: Mutation, args: argparse.Namespace, logs: Path,
                 baselines: dict[tuple[str, ...], PytestRun]) -> Row:
    if args.baseline:
        base = baselines.get(m.tests)
        if base is None:
            base = baselines[m.tests] = run_tests(root, m.tests, args.timeout,
                                                  logs / f"{m.name}.baseline.log")
        if base.returncode != 0:
            result, why = classify(base)
            return Row(m, "error", base.seconds, f"unmutated run {result}: {why}")
    with mutated(root, m):
        run = run_tests(root, m.tests, args.timeout, logs / f"{m.name}.log")
    result, caught_by = classify(run)
    return Row(m, result, run.seconds, caught_by)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", metavar="SUBSTRING", help="only mutations whose name or summary "
                    "contains this (case-insensitive)")
    ap.add_argument("--list", action="store_true",
                    help="list the mutations and their tests, check the snippets, run nothing")
    ap.add_argument("--baseline", action="store_true",
                    help="first run each mutation's tests unmutated; they must pass")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds allowed for one mutation's tests (default 900)")
    ap.add_argument("--rst", metavar="PATH", type=Path, help="also write the table here (RST)")
    ap.add_argument("--logs", metavar="DIR", type=Path,
                    help="pytest output per run (default: a new directory under the temp dir)")
    ap.add_argument("--working-tree", action="store_true",
                    help="copy the working tree (uncommitted and untracked files included) "
                    "instead of a worktree of HEAD")
    args = ap.parse_args(argv)

    mutations = select_mutations(args.k)
    if not mutations:
        ap.error(f"no mutation matches {args.k!r}; --list shows them")
    if args.list:
        return list_mutations(mutations, args.working_tree)

    # SIGTERM unwinds like Ctrl-C, so the scratch copy is removed either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logs = args.logs or Path(tempfile.mkdtemp(prefix="kafkatail-mutants-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    with scratch_copy(args.working_tree) as root:
        problems = [p for m in mutations
                    if (p := snippet_problem(read_or_none(root / m.path), m))]
        if problems:
            print("\n".join(problems), file=sys.stderr)
            raise SystemExit("mutations that cannot be applied; fix their snippets first")
        check_imports_from(root)
        baselines: dict[tuple[str, ...], PytestRun] = {}
        for i, m in enumerate(mutations, 1):
            print(f"[{i}/{len(mutations)}] {m.name}: {m.summary}", flush=True)
            row = run_mutation(root, m, args, logs, baselines)
            rows.append(row)
            print(f"    {row.result} in {row.seconds:.0f}s"
                  f"{': ' + row.caught_by if row.caught_by else ''}", flush=True)

    print()
    print(render_table(rows, rst=False), end="")
    if args.rst:
        args.rst.write_text(render_table(rows, rst=True))
        print(f"RST table: {args.rst}")
    print(f"pytest output: {logs}")
    killed = sum(r.result == "killed" for r in rows)
    print(f"{killed} of {len(rows)} killed")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
