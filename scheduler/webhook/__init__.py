"""`reviewq serve`'s ASGI app: GitHub and GitLab webhooks, health and metrics.

See `app` for the order of checks and the statuses, `deliveries` for how a delivery
is acted on exactly once.
"""

from scheduler.webhook.app import WebhookService, create_app, redis_client
from scheduler.webhook.github import sign

__all__ = ["WebhookService", "create_app", "redis_client", "sign"]
