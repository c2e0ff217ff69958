"""The `reviewq` command: every click command and all rendering live in this package,
and nothing outside it imports click or rich."""

from scheduler.cli.main import main

__all__ = ["main"]
