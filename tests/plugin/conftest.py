"""Helpers for the threadguard plugin tests: run an inner pytest in a subprocess.

``pytester`` itself is enabled by ``pytest_plugins`` in each test module (pytest refuses
``pytest_plugins`` in a conftest below the rootdir).
"""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

import kafkatail

REPO = Path(kafkatail.__file__).resolve().parent.parent
ENTRY_POINTS = [ep for ep in importlib.metadata.entry_points(group="pytest11")
                if ep.value == "kafkatail.testing.plugin"]
# Installed, the plugin loads by its entry-point name (``-p kafkatail.testing.plugin`` would
# register the same module twice); from a source tree, by module name.
LOAD = ["-p", ENTRY_POINTS[0].name] if ENTRY_POINTS else ["-p", "kafkatail.testing.plugin"]
BLOCK = ["-p", f"no:{ENTRY_POINTS[0].name}"] if ENTRY_POINTS else []


class Inner:
    """Runs pytest on files written into ``pytester``'s directory, in a fresh interpreter."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester

    def run(self, *args: str, plugin: bool = True) -> pytest.RunResult:
        load = LOAD if plugin else BLOCK
        return self.pytester.runpytest_subprocess(*load, "-p", "no:cacheprovider", "-rA", *args,
                                                  timeout=60)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Inner:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return Inner(pytester)


def outcomes(result: pytest.RunResult) -> dict[str, set[str]]:
    """Per test, the outcomes ``-rA`` lists: e.g. {"test_a.py::test_x": {"PASSED", "ERROR"}}."""
    found: dict[str, set[str]] = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in {"PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS"} and "::" in rest:
            found.setdefault(rest.split(" ", 1)[0], set()).add(word)
    return found
