"""The protocol language: schema, YAML loading with line numbers, canonical form and hash,
sign-check and rule simulation. Imports no other docketml package."""

from pathlib import Path

from .errors import ProtocolError, ProtocolErrors
from .loader import load_protocol_file, load_protocol_text
from .schema import Protocol

LIBRARY = Path(__file__).resolve().parent / "library"
"""The shipped protocols (package data): the paper's study, the PoE study, examples/."""

__all__ = [
    "LIBRARY",
    "Protocol",
    "ProtocolError",
    "ProtocolErrors",
    "load_protocol_file",
    "load_protocol_text",
]
