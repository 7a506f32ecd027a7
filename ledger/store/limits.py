"""Bounds of what a row can hold, importable without SQLAlchemy (the CLI checks ids with them
before it opens a ledger)."""

#: The largest id / seq / version a row can have on both backends: they are ``Integer``
#: columns, 32-bit on PostgreSQL (SQLite's 64-bit integer is wider). The one bound every id a
#: user gives is checked against (``ledger.cli.common.LEDGER_ID``).
MAX_ID = 2**31 - 1
