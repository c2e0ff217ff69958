"""The `reviewq` command: a thin door over the package's functions."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="reviewq")
def main() -> None:
    """reviewq: keep LLM code review inside flat-rate provider quotas."""


def _register() -> None:
    """Commands live beside the code they drive; the group only collects them."""
    from scheduler.demo_view import demo

    main.add_command(demo)


_register()
