"""The error a person must act on: every config mistake becomes one of these."""

from __future__ import annotations

__all__ = ["ConfigError", "UnknownAccount"]


class ConfigError(Exception):
    """A setting a person must fix; the message says where, what was given and what fits."""

    def __str__(self) -> str:
        # KeyError subclasses would otherwise print the message in quotes.
        return str(self.args[0]) if self.args else ""


class UnknownAccount(ConfigError, KeyError):
    """Lets callers catch a bad account name either as a config error or a lookup miss."""
