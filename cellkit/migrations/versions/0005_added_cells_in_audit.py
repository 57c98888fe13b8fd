"""When a reviewer added a cell, and in which version of its case: added cells join the audit trail.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("detections") as batch:  # plain ADD COLUMNs on SQLite: the table is not copied
        batch.add_column(sa.Column("added_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("added_version", sa.Integer, nullable=True))
