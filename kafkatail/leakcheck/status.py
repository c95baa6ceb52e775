"""Exit statuses (the monitoring-plugin convention) and the one error that means "cannot say"."""
from __future__ import annotations

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


class Unknown(Exception):
    """The check cannot say anything about the process: exit 3 with this one-line message."""
