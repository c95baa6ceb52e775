"""Test support shipped with kafkatail: the thread guard plugin, ProcessProbe, real-broker fixtures."""
