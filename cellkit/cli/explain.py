"""CLI commands for explain (filled by the owner of this feature)."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add this module's commands to the cellkit app."""
