"""The tail core: request parsing, ConsumerThread, pool, outbox, session and frames. No Flask here."""
