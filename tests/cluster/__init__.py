"""Redis Cluster and Sentinel tests. A package, so that its conftest is imported as
`cluster.conftest` and never shadows `tests/conftest.py` as the module `conftest`
(tests import `from conftest import ...`)."""
