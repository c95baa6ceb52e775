"""The tail core: requests, feeds, ConsumerThreads, the pool, outboxes and frames. No Flask
and no sockets here."""
