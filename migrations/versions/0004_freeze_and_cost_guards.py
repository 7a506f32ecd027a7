"""guard triggers: a protocol is frozen only with a passing sign-check, costs are never negative.

- ``docket_protocols_freeze_guard``: ``protocols.status`` may become (or be inserted as)
  ``frozen`` only with ``frozen_at`` set and when the row's latest sign-check passed and is bound
  to its sha256.
- ``docket_costs_nonnegative`` and ``docket_runs_cost_nonnegative``: ``costs.usd_micros`` and
  ``runs.cost_micros`` must be >= 0 (INSERT and UPDATE).

Triggers, not CHECK constraints: a ledger that already holds such a row still upgrades (SQLite
would have to rebuild the tables to add a CHECK, and a CHECK would refuse the rebuild); ``docket
audit`` reports the rows recorded before this revision. On SQLite each guard is two triggers
(``_insert``, ``_update``); on PostgreSQL one trigger calls a ``<name>_check()`` function.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from docketml.migrations.triggers import GUARDS, create_guard_triggers

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_guard_triggers(op.get_bind(), GUARDS)


def downgrade() -> None:
    bind = op.get_bind()
    for guard in GUARDS:
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {guard.name} ON {guard.table}")
            op.execute(f"DROP FUNCTION IF EXISTS {guard.pg_function}()")
        else:
            for name, _ in guard.sqlite:
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
