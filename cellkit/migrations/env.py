"""Alembic environment: cellkit.store passes its own connection (``config.attributes["connection"]``)."""

from __future__ import annotations

from alembic import context

from cellkit.store import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
