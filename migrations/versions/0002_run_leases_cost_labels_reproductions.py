"""run leases (worker, heartbeat, lease expiry), cost labels, and the reproductions table.

SQLite cannot add these the way the ledger needs without rebuilding tables ("batch" mode copies
the table), and a rebuilt table loses its triggers: the append-only triggers are re-created here
for every table this revision touches.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from docketml.migrations.triggers import create_triggers

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
    # costs is append-only: rebuilding it (SQLite) drops its triggers, re-created below
    with op.batch_alter_table("costs", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("label", sa.String(length=200), nullable=True))
    op.create_table(
        "reproductions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("protocol_pk", sa.Integer(), nullable=False),
        sa.Column("claim", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("observed", sa.Float(), nullable=True),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["protocol_pk"], ["protocols.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reproductions_protocol_pk", "reproductions", ["protocol_pk"])
    create_triggers(op.get_bind(), ["costs", "reproductions"])


def downgrade() -> None:
    op.drop_table("reproductions")
    with op.batch_alter_table("costs", recreate="always") as batch_op:
        batch_op.drop_column("label")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("worker")
    create_triggers(op.get_bind(), ["costs"])
