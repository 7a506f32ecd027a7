"""UTC normalisation lives in one TypeDecorator: every timestamp read back is aware UTC on both
backends, a non-UTC aware value is converted, and a naive one is refused at bind time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import StatementError

from docketml.ledger.store.models import CostRow, UTCDateTime


def _cost(at: datetime, seq: int) -> CostRow:
    return CostRow(
        seq=seq,
        at=at,
        hardware="cpu",
        usd_micros=0,
        rate_micros_per_hour=0,
        prev_hash="0" * 64,
        hash=f"{seq:064d}",
    )


def test_timestamps_come_back_aware_utc(ledger) -> None:
    plus5 = timezone(timedelta(hours=5))
    local = datetime(2026, 1, 2, 8, 30, 0, 123456, tzinfo=plus5)
    with ledger.session() as session:
        session.add(_cost(local, 1))
    with ledger.session() as session:
        got = session.get(CostRow, 1).at
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got == datetime(2026, 1, 2, 3, 30, 0, 123456, tzinfo=UTC)


def test_a_naive_timestamp_is_refused(ledger) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        with ledger.session() as session:
            session.add(_cost(datetime(2026, 1, 2, 3, 4), 1))
            session.flush()


def test_the_decorator_keeps_the_timezone_ddl() -> None:
    assert UTCDateTime().impl.timezone is True
