"""The ``cellkit`` command: stats, classify, detect, analyze, batch, import, explain, train, evaluate, adapt, models.

Each sub-module registers its commands on ``app``. Any CellkitError ends the command with one
line on stderr and exit code 2; nothing else is printed. Anything unforeseen (a bug) also ends with one line
(exit 1), and its traceback goes to a crash log whose path that line gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cellkit import config
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
    from cellkit.cli import adapt, batch, classify, explain, models, slide, stats, train

    for module in (stats, classify, slide, batch, explain, train, adapt, models):
        module.register(app, train_app)


_register()


MAX_MESSAGE = 600  # characters of an error line; the rest of a longer message is cut


def one_line(message: object) -> str:
    """A message as one line: whitespace collapsed, cut at ``MAX_MESSAGE`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _crash_log(exc: BaseException) -> str:
    """Write the traceback of an unforeseen error to a log file; its path, or "" when nothing could be written."""
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(exc))
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{id(exc) % 10000:04d}.log"
    for folder in (lambda: config.home() / "logs", lambda: Path(tempfile.gettempdir())):
        try:
            path = folder() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"cellkit {' '.join(sys.argv[1:])}\n\n{text}", encoding="utf-8", errors="replace")
            return str(path)
        except Exception:
            continue
    return ""


def check_no_empty_input(args: list[str]) -> None:
    """An empty argument that is no option's value (``cellkit batch "$DIR"`` with DIR unset) would be the current
    folder, scanned whole; refused instead."""
    for i, arg in enumerate(args):
        if arg.strip() == "" and (i == 0 or not args[i - 1].startswith("-")):
            raise CellkitError(
                f"argument {i + 1} is empty (an unset shell variable?); name the files or folders to read"
            )


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's stop): ends the command the way Ctrl-C does, so what was finished is kept,
    worker processes are shut down and the job resumes; it was an abrupt death with multiprocessing warnings."""


_terminated: list[int] = []  # set by SIGTERM: typer turns the interrupt into exit code 130 and drops its type


def _on_sigterm(signum: int, frame: object) -> None:
    _terminated.append(signum)
    raise Terminated


def _interrupted() -> None:
    """The one line and exit code of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    typer.echo("terminated" if _terminated else "interrupted", err=True)
    sys.exit(143 if _terminated else 130)


def main() -> None:
    """Console entry point: every way a command can end is one line on stderr at most."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config.check()  # a bad setting is one line now, not one per image later
        check_no_empty_input(sys.argv[1:])
        code = app(standalone_mode=False)  # --help and typer.Exit return their exit code
    except CellkitError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    except typer.TyperException as exc:  # a usage error (unknown option, bad value): what and where help is
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"error: {one_line(message)}{where}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except BrokenPipeError:  # the reader went away (``cellkit ... | head``): nothing to say to it
        sys.stderr.close()
        sys.exit(141)
    except OSError as exc:  # the system refused (disk full, stdout closed...): what and where, in one line
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or one_line(exc)}{where}", err=True)
        sys.exit(2)
    except Exception as exc:
        log = _crash_log(exc)
        where = f"; details in {log}" if log else ""
        typer.echo(f"error: unexpected {type(exc).__name__}: {one_line(exc)}{where}", err=True)
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C (and SIGTERM) into exit code 130 before it reaches us
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)
