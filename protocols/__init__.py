"""The protocol language: schema, YAML loading with line numbers, canonical form and hash,
sign-check and rule simulation. Imports neither ``ledger`` nor ``runners``."""

from protocols.errors import ProtocolError, ProtocolErrors
from protocols.loader import load_protocol_file, load_protocol_text
from protocols.schema import Protocol

__all__ = [
    "Protocol",
    "ProtocolError",
    "ProtocolErrors",
    "load_protocol_file",
    "load_protocol_text",
]
