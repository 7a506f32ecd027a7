"""Exceptions that map to the CLI's exit codes.

0 success; 1 a check ran and failed (:class:`CheckFailed`); 2 bad input or usage
(:class:`UserError`, ``ProtocolErrors``, ``LedgerError``); 3 integrity violation
(:class:`IntegrityViolation`); 4 the environment refused (:class:`EnvironmentRefused`: a
read-only ledger, a full disk) -- the input was fine, retrying elsewhere may work; 75 the ledger
stayed locked by another writer for the whole lock timeout (:class:`LedgerBusy`,
``EX_TEMPFAIL``: nothing was written, try again).
"""

from __future__ import annotations


class DocketError(Exception):
    """Base of the errors docket raises on purpose (``docketml.DocketError``): bad input, failed
    checks, integrity violations, ledger problems. ``exit_code`` is the CLI's exit code for it.
    (Invalid protocol files raise ``protocols.errors.ProtocolErrors``, which the public API wraps
    in :class:`InvalidProtocol`.)"""

    exit_code = 2


class UserError(DocketError):
    """Bad input or usage: one clear message, exit code 2, nothing written."""

    exit_code = 2


class CheckFailed(DocketError):
    """A check ran and failed (sign-check, budget, reproduce): exit code 1."""

    exit_code = 1


class IntegrityViolation(DocketError):
    """The audit found tampering or a missing trigger: exit code 3."""

    exit_code = 3


class EnvironmentRefused(DocketError):
    """The input was valid but the environment refused the operation (the ledger is read-only,
    the disk is full): one clear message, exit code 4, nothing written."""

    exit_code = 4


class LedgerBusy(DocketError):
    """Another writer held the ledger's write lock for the whole lock timeout (SQLite "database
    is locked"): nothing was written; the same command may succeed later. Exit code 75
    (``EX_TEMPFAIL``), never 2, which means bad input."""

    exit_code = 75


class InvalidProtocol(UserError):
    """A protocol file failed validation (public API): ``errors`` are the ``ProtocolError``s,
    one line each in the message."""

    def __init__(self, errors: list) -> None:  # list[protocols.errors.ProtocolError]
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


__all__ = [
    "CheckFailed",
    "DocketError",
    "EnvironmentRefused",
    "IntegrityViolation",
    "InvalidProtocol",
    "LedgerBusy",
    "UserError",
]
