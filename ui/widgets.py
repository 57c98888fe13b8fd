"""Small widget helpers returning plain values."""

from __future__ import annotations

# --- Home page helpers (app-shell owner) ---------------------------------------------------------


def page_link_ui(page: str, label: str, icon: str) -> None:
    """st.page_link to a page of the app; plain bold text when the page is not registered (page run alone)."""
    import streamlit as st
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"**{icon} {label}**")


def metrics_summary(metrics: object, limit: int = 3) -> str:
    """The first few numeric metrics of a model card as ``name value`` (nested dicts flattened with dots)."""
    if not isinstance(metrics, dict):
        return "—"
    flat: list[tuple[str, float]] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int | float):
            flat.append((prefix, float(value)))
        elif isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)

    walk("", metrics)
    return ", ".join(f"{k} {v:.3g}" for k, v in flat[:limit]) or "—"


def short_sha256(spec: object, n: int = 12) -> str:
    """Short sha256 of a model's weights: from its card, else hashed from the file; '—' when missing."""
    from cellkit.models import sha256_file

    digest = getattr(spec, "card", {}).get("sha256")
    if not digest:
        path = spec.weights_path  # type: ignore[attr-defined]
        if not path.is_file():
            return "weights missing"
        digest = sha256_file(path)
    return str(digest)[:n]


def masked_db_url(url: str) -> str:
    """A database URL with its password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable CELLKIT_DB_URL)"
