"""Run the real ``cellkit`` entry point in-process: exit code, stdout, stderr."""

from __future__ import annotations

import sys

import pytest

from cellkit.cli import main


def run_cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cellkit", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err
