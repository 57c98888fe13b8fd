"""Audit trail of corrections: who made each one and the label it replaced.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("author", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("from_label", sa.String(64), nullable=False, server_default=""))
