"""Measurements that print figures against bars: the limiter against its peers, the
webhook server under load, and `bench report`, which writes docs/benchmarks.md."""
