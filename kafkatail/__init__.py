"""kafkatail: live-tail Kafka topics over WebSocket with threads that always end."""

__version__ = "0.1.0"
