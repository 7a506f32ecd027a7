"""verdict_looks: every `docket verdict` whose inputs match the latest recorded verdict.

A verdict row is recorded only when the inputs (or the result) changed; a repeated look is logged
here instead, append-only like verdicts, so the number of looks stays visible without
multiplying verdict rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from docketml.migrations.triggers import create_triggers

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verdict_looks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("protocol_pk", sa.Integer(), nullable=False),
        sa.Column("verdict_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("inputs_sha256", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("who", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["protocol_pk"], ["protocols.id"]),
        sa.ForeignKeyConstraint(["verdict_id"], ["verdicts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_verdict_looks_protocol_pk", "verdict_looks", ["protocol_pk"])
    create_triggers(op.get_bind(), ["verdict_looks"])


def downgrade() -> None:
    op.drop_table("verdict_looks")
