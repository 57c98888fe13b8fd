"""The one error type cellkit raises for anything a user can fix."""

from __future__ import annotations


class CellkitError(ValueError):
    """A problem with the user's input or set-up; the message says what to do about it."""


def named(name: str, message: str) -> str:
    """``message`` about the file ``name``, naming it once: readers' messages already start with the name."""
    return message if message.startswith(name) else f"{name}: {message}"
