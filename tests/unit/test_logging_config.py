"""``log_config``: a dictConfig file (TOML) sets the sinks behind kafkatail's log queue, never
replaces the queue."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from kafkatail.config import Config, ConfigError
from kafkatail.ops import logsetup

SHIPPED = Path(__file__).resolve().parents[2] / "conf" / "logging.toml"


class RecordingHandler(logging.Handler):
    """A sink that notes which thread wrote each record, and can be made to block."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(10)
        self.lines.append((threading.current_thread().name, self.format(record)))


@pytest.fixture
def teardown_logging():
    kafka = logging.getLogger("kafka")
    level = kafka.level
    yield
    assert logsetup.teardown()
    kafka.setLevel(level)  # the file sets it; later tests in this process expect the default


def _wait(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_shipped_config_loads_and_records_reach_its_sinks(tmp_path, capsys, teardown_logging):
    logfile = tmp_path / "kafkatail.log"
    config = tmp_path / "logging.toml"
    config.write_text(SHIPPED.read_text().replace("/var/log/kafkatail/kafkatail.log", str(logfile)))
    pipeline = logsetup.setup(Config(log_config=str(config)))
    root = logging.getLogger()
    assert root.handlers == [pipeline.handler]  # the queue stays in front
    assert [type(h).__name__ for h in pipeline.listener.handlers] == ["StreamHandler",
                                                                       "WatchedFileHandler"]
    assert logging.getLogger("kafka").level == logging.WARNING
    log = logging.getLogger("kafkatail.test")
    log.info("just info")
    log.warning("a warning")
    logging.getLogger("kafka.conn").info("connected")  # below the file's level for kafka
    assert logsetup.teardown()
    err = capsys.readouterr().err
    assert " INFO kafkatail.test: just info" in err and " WARNING kafkatail.test: a warning" in err
    assert "connected" not in err
    written = logfile.read_text()
    assert "just info" not in written  # the file sink is WARNING and up
    line = next(x for x in written.splitlines() if "a warning" in x)
    # The detailed format prints process and thread, so they were gathered for it.
    assert f" WARNING {os.getpid()} MainThread kafkatail.test: a warning" in line


def test_sinks_run_on_the_listener_thread_and_a_blocked_one_costs_callers_nothing(
        tmp_path, teardown_logging):
    config = tmp_path / "logging.toml"
    config.write_text(f"""
[formatters.short]
format = "%(levelname)s %(message)s"
[handlers.recorder]
class = "{__name__}.RecordingHandler"
formatter = "short"
[root]
handlers = ["recorder"]
""")
    pipeline = logsetup.setup(Config(log_config=str(config), log_queue_size=20))
    sink = pipeline.listener.handlers[0]
    assert isinstance(sink, RecordingHandler)
    log = logging.getLogger("kafkatail.test")
    log.warning("first")
    _wait(lambda: sink.lines)
    assert sink.lines == [(logsetup.LISTENER_NAME, "WARNING first")]
    sink.gate.clear()  # the sink stops writing
    t0 = time.monotonic()
    for i in range(200):
        log.info("flood %d", i)
    took = time.monotonic() - t0
    assert took < 0.5, f"200 log calls against a blocked sink took {took:.2f}s"
    assert logsetup.dropped_total() > 0
    sink.gate.set()
    assert logsetup.teardown()
    assert any("dropped" in text for _, text in sink.lines)


class HalfwayStream:
    """A stream whose write can be held halfway, as a slow disk or a full pipe would."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.text = ""

    def write(self, text: str) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.text += text

    def flush(self) -> None:
        pass


def _fork_and_exit_child() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def test_a_fork_waits_until_the_listener_is_not_halfway_through_a_write(teardown_logging):
    """gunicorn's master forks workers while its listener writes: a child that inherits a
    stream locked mid-write by a thread it does not have loses its log listener."""
    stream = HalfwayStream()
    logsetup.setup(Config(), stream=stream)
    logging.getLogger("kafkatail.test").warning("slow")
    assert stream.entered.wait(5)
    opener = threading.Timer(0.3, stream.gate.set)
    opener.name = "kt-test-opener"
    opener.start()
    _fork_and_exit_child()
    finished_first = stream.gate.is_set()
    opener.join(5)
    assert finished_first, "the fork went ahead while the listener was halfway through a write"
    assert "slow" in stream.text


def test_a_blocked_sink_delays_a_fork_by_at_most_the_fork_wait(teardown_logging, monkeypatch):
    monkeypatch.setattr(logsetup, "_FORK_WAIT_S", 0.2)
    stream = HalfwayStream()
    logsetup.setup(Config(), stream=stream)
    logging.getLogger("kafkatail.test").warning("stuck")
    assert stream.entered.wait(5)
    t0 = time.monotonic()
    _fork_and_exit_child()
    took = time.monotonic() - t0
    stream.gate.set()
    assert 0.15 < took < 2.0, took


@pytest.mark.parametrize("text, problem", [
    ("[root]\nlevel = 'DEBUG'\nhandlers = ['h']\n[handlers.h]\nclass = 'logging.NullHandler'\n",
     "the root level is log_level"),
    ("[root]\nhandlers = []\n", "[root] handlers names no sink"),
    ("[root]\nhandlers = ['h']\n[handlers.h]\nclass = 'logging.NullHandler'\n"
     "[loggers.kafka]\nhandlers = ['h']\n", "loggers.kafka: handlers go on [root] only"),
    ("[root]\nhandlers = ['h']\n[handlers.h]\nclass = 'no.such.Handler'\n", "Unable to configure"),
    ("[root\n", "Expected ']'"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, problem):
    config = tmp_path / "logging.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"^log_config .*logging.toml: ") as info:
        logsetup.setup(Config(log_config=str(config)))
    assert problem in str(info.value)
    assert logsetup.current() is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        logsetup.setup(Config(log_config=str(tmp_path / "absent.toml")))
