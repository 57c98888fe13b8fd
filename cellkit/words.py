"""Counts in words, the one rule for every message a person reads: "1 field has", "3 fields have", never "(s)"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun that agrees with it: ``count(1, "field")`` is "1 field", ``count(3, "field")`` "3 fields";
    ``plural`` for a noun whose plural is not noun + "s" (``count(2, "white cell")``: "2 white cells")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def verb(n: int, singular: str, plural: str) -> str:
    """The verb that agrees with ``n`` things: ``verb(1, "is", "are")`` is "is"."""
    return singular if n == 1 else plural
