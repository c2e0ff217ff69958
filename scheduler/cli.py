"""The `reviewq` command: a thin door over the package's functions."""

from __future__ import annotations

import click

__all__ = ["main"]


@click.group()
@click.version_option(package_name="reviewq")
def main() -> None:
    """reviewq: keep LLM code review inside flat-rate provider quotas."""
