"""Turning the guard on and off, allow-lists, exclusions, scopes and the end-of-run summary."""
from __future__ import annotations

from .conftest import outcomes

pytest_plugins = ["pytester"]

LEAKY = '''
import threading

import pytest

STOP = threading.Event()


def leak(name):
    threading.Thread(target=STOP.wait, name=name, daemon=True).start()


def test_plain_leak():
    leak("plain-leak")


@pytest.mark.threadguard(allow=[r"^cache-warmer", "^metrics-"], reason="process-wide, by design")
def test_allowed():
    leak("cache-warmer-1")
    leak("metrics-2")


@pytest.mark.threadguard(allow=[r"^cache-warmer"], reason="only this one")
def test_allowed_and_not():
    leak("cache-warmer-2")
    leak("stray-1")


@pytest.mark.threadguard_off
def test_off():
    leak("off-1")


@pytest.mark.threadguard(enabled=False)
def test_disabled():
    leak("disabled-1")


def test_excluded_in_ini():
    leak("kafka-io-kt-7")
'''


def test_allow_lists_opt_outs_and_ini_exclusions(inner):
    inner.pytester.makeini("[pytest]\nthreadguard = true\nthreadguard_grace = 0.2\n"
                           "threadguard_exclude =\n    ^kafka-io-\n    ^never-matches$\n")
    inner.pytester.makepyfile(test_leaky=LEAKY)
    result = inner.run()
    assert outcomes(result) == {
        "test_leaky.py::test_plain_leak": {"PASSED", "ERROR"},
        "test_leaky.py::test_allowed": {"PASSED"},
        "test_leaky.py::test_allowed_and_not": {"PASSED", "ERROR"},
        "test_leaky.py::test_off": {"PASSED"},
        "test_leaky.py::test_disabled": {"PASSED"},
        "test_leaky.py::test_excluded_in_ini": {"PASSED"},
    }
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_allowed_and_not*",
        "*thread 'stray-1' started at test_leaky.py:*",
        "  allowed: 'cache-warmer-2' (only this one)",
    ])
    result.stdout.fnmatch_lines(
        ["checked 4 tests (grace 0.2s, fds off): 2 left threads or fds behind"])


def test_marker_turns_the_guard_on_for_one_test(inner):
    inner.pytester.makepyfile(test_marked='''
        import threading
        import pytest

        STOP = threading.Event()

        @pytest.mark.threadguard
        def test_checked():
            threading.Thread(target=STOP.wait, name="checked", daemon=True).start()

        def test_unchecked():
            threading.Thread(target=STOP.wait, name="unchecked", daemon=True).start()
    ''')
    result = inner.run("--threadguard-grace=0.2")
    assert outcomes(result) == {"test_marked.py::test_checked": {"PASSED", "ERROR"},
                                "test_marked.py::test_unchecked": {"PASSED"}}
    result.stdout.fnmatch_lines(["checked 1 test *"])


def test_misspelt_marker_is_a_usage_error(inner):
    inner.pytester.makepyfile(test_typo='''
        import pytest

        @pytest.mark.threadguard(alow=["x"])
        def test_a():
            pass

        @pytest.mark.threadguard(allow=["x"])
        def test_b():
            pass
    ''')
    result = inner.run()
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*test_typo.py::test_a: threadguard takes only allow=, reason=, "
                                 "enabled=*alow*"])
    inner.pytester.makepyfile(test_typo='''
        import pytest

        @pytest.mark.threadguard(allow=["x"])
        def test_b():
            pass
    ''')
    inner.run().stderr.fnmatch_lines(["*test_b: threadguard(allow=...) needs reason='why'"])


UNRELATED = '''
import sys
import threading

import _thread
import pytest

STOP = threading.Event()


def test_passes():
    assert True


def test_fails():
    assert 1 == 2


def test_leaks_a_thread():
    threading.Thread(target=STOP.wait, daemon=True).start()


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False


def test_nothing_is_wrapped_or_imported(request):
    assert threading.Thread.start.__code__.co_filename == threading.__file__
    assert type(_thread.start_new_thread).__name__ == "builtin_function_or_method"
    assert "kafkatail.testing.threadguard" not in sys.modules
    assert request.config.pluginmanager.get_plugin("kafkatail-threadguard") is None


def test_reports_whether_the_plugin_is_loaded(request):
    loaded = any(getattr(p, "__name__", "") == "kafkatail.testing.plugin"
                 for p in request.config.pluginmanager.get_plugins())
    print(f"PLUGIN-LOADED={loaded}")
'''


def test_loaded_but_not_enabled_behaves_as_without_the_plugin(inner):
    inner.pytester.makepyfile(test_unrelated=UNRELATED)
    with_plugin = inner.run("-s", plugin=True)
    without = inner.run("-s", plugin=False)
    with_plugin.stdout.fnmatch_lines(["*PLUGIN-LOADED=True*"])
    without.stdout.fnmatch_lines(["*PLUGIN-LOADED=False*"])
    assert with_plugin.parseoutcomes() == without.parseoutcomes() == {
        "passed": 4, "failed": 1, "skipped": 1, "xfailed": 1}
    assert outcomes(with_plugin) == outcomes(without)
    assert with_plugin.ret == without.ret == 1
    assert "threadguard" not in with_plugin.stdout.str()


MODULE_SCOPE = '''
import threading

STOP = threading.Event()
WORKERS = []


def test_starts_a_worker():
    WORKERS.append(threading.Thread(target=STOP.wait, name="shared-worker"))
    WORKERS[0].start()


def test_stops_it():
    STOP.set()
'''


def test_module_and_session_scope_let_tests_share_a_thread(inner):
    inner.pytester.makepyfile(test_shared=MODULE_SCOPE, test_forgets=MODULE_SCOPE.replace(
        "STOP.set()", "pass").replace("target=STOP.wait", "target=STOP.wait, daemon=True"))
    result = inner.run("--threadguard", "--threadguard-grace=0.2", "--threadguard-scope=module")
    assert outcomes(result) == {
        "test_forgets.py::test_starts_a_worker": {"PASSED"},
        "test_forgets.py::test_stops_it": {"PASSED", "ERROR"},
        "test_shared.py::test_starts_a_worker": {"PASSED"},
        "test_shared.py::test_stops_it": {"PASSED"},
    }
    result.stdout.fnmatch_lines([
        "threadguard (during test_forgets.py): left behind after *: thread 'shared-worker'*",
        "checked 2 modules (grace 0.2s, fds off): 1 left threads or fds behind"])
    function_scope = inner.run("--threadguard", "--threadguard-grace=0.2", "test_shared.py")
    function_scope.assert_outcomes(passed=2, errors=1)
    session_scope = inner.run("--threadguard", "--threadguard-grace=0.2",
                              "--threadguard-scope=session")
    session_scope.assert_outcomes(passed=4, errors=1)
    session_scope.stdout.fnmatch_lines([
        "*ERROR at teardown of test_stops_it*",
        "threadguard (during session): left behind after *: thread 'shared-worker'*",
        "checked 1 session (grace 0.2s, fds off): 1 left threads or fds behind"])


def test_threads_of_a_wider_fixture_belong_to_that_fixture(inner):
    inner.pytester.makeconftest('''
        import threading
        import pytest

        @pytest.fixture(scope="session")
        def background():
            stop = threading.Event()
            thread = threading.Thread(target=stop.wait, name="session-background")
            thread.start()
            yield thread
            stop.set()
            thread.join()
    ''')
    inner.pytester.makepyfile(test_uses='''
        def test_first(background):
            assert background.is_alive()

        def test_second(background):
            assert background.is_alive()
    ''')
    result = inner.run("--threadguard", "--threadguard-grace=0.2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["checked 2 tests (grace 0.2s, fds off): 0 left threads or fds "
                                 "behind"])
