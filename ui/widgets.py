"""Small widget helpers returning plain values."""

from __future__ import annotations
