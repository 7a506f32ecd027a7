"""The ledger: SQL models, verdict engine, costs, audit."""
