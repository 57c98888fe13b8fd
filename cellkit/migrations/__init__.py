"""Alembic migrations of the cellkit database (``cellkit.store`` runs them when it opens a database)."""
