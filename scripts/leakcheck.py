#!/usr/bin/env python3
"""leakcheck: is this live process leaking threads, or burning CPU in one? Ask /proc, not logs.

Operators run it by this path; it is ``kafkatail leakcheck``, whose code and documentation live in
``kafkatail/leakcheck/``::

    scripts/leakcheck.py --pid 4242 [--children] [--snapshot PATH | --url BASE] [--json]
    scripts/leakcheck.py --profile 10 --url http://host:8080 [--out hot] [--mode cpu|wall]

Exit status 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (a monitoring plugin's); ``--help`` for the
options.
"""
from kafkatail.leakcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
