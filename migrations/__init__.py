"""Alembic migrations of the docket ledger (shipped in the wheel; ``docket init`` runs them)."""
