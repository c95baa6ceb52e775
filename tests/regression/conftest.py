"""The server as production runs it (``kafkatail serve``, a subprocess), measured from outside."""
from __future__ import annotations

from typing import Iterator

import pytest

from kafkatail.testing.server import ServerProcess

WORKERS = ["gthread", "gevent"]


@pytest.fixture(params=WORKERS)
def server_process(request, cluster) -> Iterator:
    made: list[ServerProcess] = []

    def make(bootstrap_servers_override: str | None = None, host: str = "127.0.0.1",
             **config: object) -> ServerProcess:
        config.setdefault("ping_interval_s", 2)
        config.setdefault("poll_timeout_ms", 250)
        s = ServerProcess(bootstrap_servers_override or cluster.bootstrap, request.param, host,
                          **config)
        made.append(s)
        return s

    make.worker_class = request.param
    yield make
    for s in made:
        s.stop()
