"""Batch jobs and their images (cellkit batch --save / cellkit import).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_uid", sa.String(64), unique=True),
        sa.Column("owner", sa.String(128)),
        sa.Column("created", sa.DateTime(timezone=True)),
        sa.Column("folder", sa.String(1024)),
        sa.Column("command", sa.Text),
        sa.Column("settings", sa.JSON),
    )
    op.create_index("ix_batch_jobs_owner", "batch_jobs", ["owner"])
    op.create_table(
        "batch_items",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE")),
        sa.Column("key", sa.String(40)),
        sa.Column("path", sa.String(1024)),
        sa.Column("source", sa.String(1024)),
        sa.Column("member", sa.String(1024)),
        sa.Column("status", sa.String(16)),
        sa.Column("error", sa.Text),
        sa.Column("analysis_id", sa.Integer, sa.ForeignKey("analyses.id", ondelete="SET NULL"), nullable=True),
        sa.Column("wbc", sa.Integer),
        sa.Column("rbc", sa.Integer),
        sa.Column("platelet", sa.Integer),
        sa.UniqueConstraint("job_id", "key", name="uq_batch_item"),
    )
    op.create_index("ix_batch_items_job_id", "batch_items", ["job_id"])
