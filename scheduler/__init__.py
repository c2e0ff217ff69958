"""reviewq scheduler: plans, the Redis quota limiter, admission, webhook intake and the CLI."""
