"""leakcheck: is this live process leaking threads, or burning CPU in one? Ask /proc, not logs.

kafkatail exists because a server started one Kafka consumer thread per page view and never
stopped it: thousands of identical threads, 90% CPU, and nothing in the logs. This is the tool
an operator points at such a process (kafkatail or any other Python process)::

    scripts/leakcheck.py --pid 4242 [--children] [--snapshot PATH | --url BASE] [--json]

It samples every thread of the process over a short window (``--samples`` x ``--interval``)
with kafkatail's ``ThreadSampler``, shows the busiest threads like ``top -H`` with CPU% over the
whole window, the thread and fd trend, and Python stacks for the threads it flags. Stacks come
from the best source available: a JSON snapshot the server wrote (``--snapshot``), the server's
``/debug/threads`` (``--url``; an admin token in ``$KAFKATAIL_TOKEN`` is sent as a header), else
``py-spy dump`` if installed and permitted, else none.

Findings and the exit status follow the monitoring-plugin convention (0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN), so the same command serves a human at a terminal and a Nagios check:

- thread count growing (monotonic over the window, by ``--min-growth`` or more): CRITICAL
- more threads than ``--max-threads``: CRITICAL
- a thread above ``--max-thread-cpu`` percent of a core: CRITICAL
- ``--max-group`` or more threads sharing one name once ids are stripped: WARNING
- more than ``--max-unnamed`` threads, and most of them, still carrying the process's own OS
  name: WARNING. A healthy kafkatail keeps one unnamed gunicorn gthread pool thread per open
  tail next to three named ones (``kt-ws-``, ``kt-tail-``, ``kafka-io-kt-``), so only a process
  where top -H cannot tell most threads apart is flagged; a leak of unnamed threads in a
  well-named process is still caught by the growth finding.
- fd count growing (monotonic, by ``--min-fd-growth`` or more): WARNING

It reads /proc once per process per sample and runs at most one ``py-spy`` per process, never
anything per thread, so it is safe against a process with thousands of threads.

``--profile SECONDS`` asks where the CPU goes instead::

    scripts/leakcheck.py --profile 10 --url http://host:8080 [--out hot] [--mode cpu|wall]
    scripts/leakcheck.py --profile 10 --pid 4242 [--children]          # py-spy, needs ptrace

It fetches an on-CPU flame graph from the server's ``/debug/profile`` (folded stacks, taken inside
the process, no privileges), prints the hottest functions and stacks, and with ``--out PREFIX``
writes ``PREFIX.folded``, ``PREFIX.svg`` and ``PREFIX.speedscope.json``. Without a URL, or when
it does not answer, it runs ``py-spy record`` on ``--pid`` if py-spy is installed and may attach
(ptrace); otherwise it says why in one line and exits 3.

``kafkatail leakcheck ARGS`` and ``scripts/leakcheck.py ARGS`` both run ``main``. The modules:
``stacks`` (where Python names and stacks come from), ``report`` (the sampled window, findings,
the text and JSON report), ``flames`` (``--profile``) and ``command`` (the command line). Threads
are grouped by ``kafkatail.ops.threads.thread_group``, the rule the test guard, the probe and the
profiler's flame graph use.
"""
from __future__ import annotations

from .command import main

__all__ = ["main"]
