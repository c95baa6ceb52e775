"""Test support shipped with kafkatail: real-broker fixtures (and, later, the thread guard)."""
