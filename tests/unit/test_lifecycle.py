"""What a kafkatail worker does as it loads the app, without gunicorn around it."""
import gc
import signal

import pytest

from kafkatail.workers.lifecycle import Lifecycle


class App:
    def __init__(self, extensions: dict) -> None:
        self.extensions = extensions


class Loader:
    """gunicorn's part of ``load_wsgi``: the app is there afterwards."""

    app: App

    def load_wsgi(self) -> None:
        self.wsgi = self.app


class Worker(Lifecycle, Loader):
    pass


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR2)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    gc.unfreeze()


@pytest.mark.parametrize("extensions, frozen", [({"kafkatail": {}}, True), ({}, False)])
def test_loading_kafkatails_app_freezes_what_it_holds(handlers, extensions, frozen):
    gc.unfreeze()
    worker = Worker()
    worker.app = App(extensions)
    worker.load_wsgi()
    assert (gc.get_freeze_count() > 0) is frozen
    assert (signal.getsignal(signal.SIGINT) == worker.handle_exit) is frozen
