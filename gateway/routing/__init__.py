"""Which backend serves a request: the pool, session keys, placement."""
