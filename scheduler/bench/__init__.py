"""Measurements that return figures against bars: the limiter against its peers, the
webhook server under load, and the pages of `bench report` (docs/benchmarks.md).
Nothing here prints: `reviewq bench` (scheduler.cli.bench) renders what they return."""
