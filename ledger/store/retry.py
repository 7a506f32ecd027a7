"""Retrying idempotent ledger transactions after a dropped connection or a serialization failure.

Contract of :func:`with_retry`:

- ``fn`` is one *transaction unit*: it opens its own transaction, and running it twice has the
  same effect as running it once (it is idempotent). A unit that fails part-way was rolled back by
  the database (a dead connection's transaction never commits), so retrying it is safe; the one
  ambiguous case, a connection lost *after* the server committed but before the client heard, is
  why units must also be idempotent when their earlier attempt did commit (e.g. look the run up by
  its worker token before creating it; :func:`ledger.runs.complete_run` refuses to complete a run
  twice).
- Retried: errors for which :func:`is_retryable` is true (a connection invalidated by the pool,
  PostgreSQL connection-class errors ``08xxx``, admin shutdown ``57P01``..``57P03``, serialization
  failure ``40001``, deadlock ``40P01``). Everything else is raised at once: in particular docket's
  own errors, integrity errors, and SQLite's "database is locked" (the busy timeout already waited;
  retrying would hide a real problem).
- At most ``attempts`` calls; the wait before retry *n* (1-based) is
  ``min(max_delay, base_delay * 2 ** (n - 1))`` with up to 25 % random jitter. The last error is
  raised unchanged when the attempts are used up.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .db import Ledger

T = TypeVar("T")
log = logging.getLogger("docket.retry")

DEFAULT_ATTEMPTS = 6
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_retryable(exc: BaseException) -> bool:
    """True when ``exc`` is a transient database failure a fresh transaction may not meet."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    return state is not None and (state in RETRYABLE_SQLSTATES or state.startswith("08"))


def with_retry(
    fn: Callable[[], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    base_delay: float = 0.05,
    max_delay: float = 2.0,
    retry_if: Callable[[BaseException], bool] = is_retryable,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Call the idempotent transaction unit ``fn`` until it succeeds (see module docstring).

    ``on_retry(attempt, exc)`` is called before each retry (attempt = the number of the failed
    call, 1-based); tests use it to count retries.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not retry_if(exc):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            delay *= 1 + random.random() * 0.25
            log.warning(
                "ledger transaction failed (%s); retry %d/%d in %.2f s",
                type(getattr(exc, "orig", exc)).__name__,
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def transact(
    ledger: Ledger,
    unit: Callable[[Session], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``unit(session)`` in one transaction of ``ledger`` (committed on return), retried as
    a whole by :func:`with_retry`. ``unit`` must be idempotent and must not keep ORM objects
    across attempts (each attempt gets a fresh session)."""

    def once() -> T:
        with ledger.session() as session:
            return unit(session)

    return with_retry(once, attempts=attempts, on_retry=on_retry)
