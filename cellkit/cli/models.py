"""CLI command ``cellkit models``: the models installed (bundled and adapted here), and this machine's default."""

from __future__ import annotations

import typer


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``cellkit models``."""

    @app.command("models")
    def models_command(
        set_default: str = typer.Option(
            None, "--set-default", help="make this white-cell model the default of the app and the commands here"
        ),
        bundled_default: bool = typer.Option(
            False, "--bundled-default", help="go back to the bundled default white-cell model"
        ),
    ) -> None:
        """List the models (name, task, bundled or adapted here); the default white-cell model is marked."""
        from cellkit.errors import CellkitError
        from cellkit.models import default_names, list_specs, set_machine_default

        if set_default is not None and bundled_default:
            raise CellkitError("models: pass --set-default NAME or --bundled-default, not both")
        if set_default is not None:
            set_machine_default(set_default)
        elif bundled_default:
            set_machine_default(None)
        defaults = set(default_names().values())
        for spec in list_specs():
            kind = "bundled" if spec.bundled else "adapted here"
            shown = spec.card.get("display_name") or ""
            mark = "  (default)" if spec.name in defaults else ""
            typer.echo(f"{spec.name}\t{spec.task}\t{kind}\t{shown}{mark}")
