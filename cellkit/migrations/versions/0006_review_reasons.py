"""Why the model left a cell for review ("unlike the cells the model was trained on (score 1.19 > 1)"): kept with
the cell, so a reopened analysis says it as the fresh one did.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("detections") as batch:  # a plain ADD COLUMN on SQLite: the table is not copied
        batch.add_column(sa.Column("review", sa.Text, nullable=False, server_default=""))
