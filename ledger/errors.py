"""Exceptions that map to the CLI's exit codes.

0 success; 1 a check ran and failed (:class:`CheckFailed`); 2 bad input or usage
(:class:`UserError`, ``ProtocolErrors``, ``LedgerError``); 3 integrity violation
(:class:`IntegrityViolation`).
"""

from __future__ import annotations

from docketml.protocols.errors import DocketError


class UserError(DocketError):
    """Bad input or usage: one clear message, exit code 2, nothing written."""

    exit_code = 2


class CheckFailed(DocketError):
    """A check ran and failed (sign-check, budget, reproduce): exit code 1."""

    exit_code = 1


class IntegrityViolation(DocketError):
    """The audit found tampering or a missing trigger: exit code 3."""

    exit_code = 3


__all__ = ["CheckFailed", "DocketError", "IntegrityViolation", "UserError"]
