"""The budget: plans and presets, the Lua sliding-window limiter, and account circuits.

This room knows nothing of providers, forges, RQ or admission: it takes costs in
milli-units and answers a grant, or a denial with the exact wait. Its Redis keys all
share the account's `{hash tag}`, so it runs unchanged on Redis Cluster.
"""
