"""Errors a user can cause, each carrying where (file, line, field path) and what was expected."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class ProtocolError:
    """One problem in a protocol file: ``FILE:LINE: field.path: message``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ProtocolErrors(Exception):
    """Raised with every problem found at once (never only the first)."""

    def __init__(self, errors: list[ProtocolError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def did_you_mean(name: str, options: list[str] | set[str]) -> str:
    """``" (did you mean 'x'?)"`` for the option closest to a misspelt ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name), sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
