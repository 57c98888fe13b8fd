"""The ``cellkit`` command: stats, classify, detect, analyze, batch, import, explain, train, evaluate, adapt.

Each sub-module registers its commands on ``app``. Any CellkitError ends the command with one
line on stderr and exit code 2; nothing else is printed.
"""

from __future__ import annotations

import sys

import typer

from cellkit.errors import CellkitError

app = typer.Typer(
    name="cellkit",
    help="Blood-smear analysis: dataset statistics, detection, hierarchical classification, explanations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train models (resumable, with progress bars).", no_args_is_help=True)
app.add_typer(train_app, name="train")


def _register() -> None:
    from cellkit.cli import adapt, batch, classify, explain, slide, stats, train

    for module in (stats, classify, slide, batch, explain, train, adapt):
        module.register(app, train_app)


_register()


def main() -> None:
    """Console entry point."""
    try:
        app()
    except CellkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
