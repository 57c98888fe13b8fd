"""Cases (specimens of many fields) with sign-off and amendments, cells added by a reviewer, stored images.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True)),
        sa.Column("target_wbc", sa.Integer, nullable=False, server_default="100"),
        sa.Column("details", sa.JSON),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
    )
    op.create_index("ix_cases_owner", "cases", ["owner"])
    op.create_table(
        "case_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("who", sa.String(128), nullable=False, server_default=""),
        sa.Column("created", sa.DateTime(timezone=True)),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("summary", sa.JSON, nullable=True),
    )
    op.create_index("ix_case_events_case_id", "case_events", ["case_id"])
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("png", sa.LargeBinary, nullable=False),
    )
    # a plain ADD COLUMN, never a batch copy: on SQLite a copy drops the old table, and with foreign keys on that
    # would cascade into the detections
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE analyses ADD COLUMN case_id INTEGER REFERENCES cases (id) ON DELETE SET NULL")
    else:
        op.add_column("analyses", sa.Column("case_id", sa.Integer, nullable=True))
        op.create_foreign_key("fk_analyses_case", "analyses", "cases", ["case_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_analyses_case_id", "analyses", ["case_id"])
    with op.batch_alter_table("detections") as batch:
        batch.add_column(sa.Column("added_by", sa.String(128), nullable=False, server_default=""))
    with op.batch_alter_table("corrections") as batch:
        batch.add_column(sa.Column("case_version", sa.Integer, nullable=True))
