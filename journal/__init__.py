"""Journal entries: schema, markdown import/export, hash chain.

Pure Python: imports neither ``ledger`` nor ``runners``.
"""

from .chain import (
    GENESIS,
    ChainProblem,
    ChainRow,
    build_chain,
    canonical_entry_json,
    entry_from_canonical,
    entry_hash,
    verify_chain,
)
from .flags import (
    entry_from_flags,
    entry_from_markdown,
    entry_from_markdown_file,
    parse_scored_flag,
)
from .markdown import HEADER, JournalParseError, parse_journal, render_entry, render_journal
from .schema import FailureMode, Inference, JournalEntry

__all__ = [
    "GENESIS",
    "HEADER",
    "ChainProblem",
    "ChainRow",
    "FailureMode",
    "Inference",
    "JournalEntry",
    "JournalParseError",
    "build_chain",
    "canonical_entry_json",
    "entry_from_canonical",
    "entry_from_flags",
    "entry_from_markdown",
    "entry_from_markdown_file",
    "entry_hash",
    "parse_journal",
    "parse_scored_flag",
    "render_entry",
    "render_journal",
    "verify_chain",
]
