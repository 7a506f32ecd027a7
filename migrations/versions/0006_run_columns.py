"""run_columns: a finished run's effective observations per group, stored once as columns.

- ``run_columns``: ``(run_id, grp, chunk)`` primary key, ``rows`` (observations in the chunk) and
  ``body`` (the bytes of ``ledger/store/columns.py``'s format ``docket-columns/1``). Written when a
  run completes, read by verdicts instead of the ``observations`` rows (a 10^7-observation read
  spent most of its time building a Python tuple per row).
- Append-only (triggers, as the other append-only tables). PostgreSQL keeps ``body`` out of line
  and uncompressed (``STORAGE EXTERNAL``): float columns barely compress and the read should not
  pay for decompression.

Runs finished before this revision get their columns from ``docket db upgrade`` right after it
(``ledger/store/db.py``: ``upgrade`` calls ``columns.backfill``, live code, since a migration
imports none); until then, and for any run without them, verdicts read the rows (same result).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from docketml.migrations.triggers import create_triggers

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_columns",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("grp", sa.String(length=100), nullable=False),
        sa.Column("chunk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id", "grp", "chunk"),
    )
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE run_columns ALTER COLUMN body SET STORAGE EXTERNAL")
    create_triggers(conn, ["run_columns"])


def downgrade() -> None:
    bind = op.get_bind()
    for name in ("docket_run_columns_no_update", "docket_run_columns_no_delete"):
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON run_columns")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS docket_run_columns_no_truncate ON run_columns")
    else:
        op.execute("DROP TRIGGER IF EXISTS docket_run_columns_no_replace")
    op.drop_table("run_columns")
