"""The app's pages use cellkit's public API only (the ruff rule TID251 enforces it too)."""

from __future__ import annotations

import ast
from pathlib import Path

import cellkit

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves():
    for name in cellkit.__all__:
        assert getattr(cellkit, name) is not None, name


def test_pages_import_only_public_names():
    for page in sorted((ROOT / "app_pages").glob("*.py")):
        for node in ast.walk(ast.parse(page.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cellkit"):
                assert node.module == "cellkit", f"{page.name}:{node.lineno} imports from {node.module}"
                missing = [a.name for a in node.names if a.name not in cellkit.__all__]
                assert not missing, f"{page.name}:{node.lineno}: {missing} are not in cellkit.__all__"
            if isinstance(node, ast.Import):
                deep = [a.name for a in node.names if a.name.startswith("cellkit.")]
                assert not deep, f"{page.name}:{node.lineno} imports {deep}"
