"""The forges a review comes from and goes back to: the GitHub and GitLab clients, and
the sinks that post a finished review (or keep it in Redis)."""
