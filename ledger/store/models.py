"""SQLAlchemy 2 typed models of the ledger.

The schema is created only by Alembic migrations (``migrations/``); these classes describe it.
Append-only tables (frozen protocols, sign_checks, verdicts, costs, journal_entries,
reproductions, log_leaves, log_nodes, run_columns) are enforced by database triggers
(``migrations/triggers.py``).
Money is stored as integer micro-dollars (``*_micros``), never as floats.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC ``datetime`` in Python, on every backend.

    The one place UTC is normalised: a value bound to the database must be aware (a naive one
    is refused, since its zone is unknown) and is converted to UTC; a value read back is UTC
    (SQLite returns naive text, which docket always wrote as UTC). The DDL is that of
    ``DateTime(timezone=True)``, so migrations are unchanged."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


BigId = BigInteger().with_variant(Integer(), "sqlite")


class ProtocolRow(Base):
    """One version of a protocol. ``status`` is ``registered`` or ``frozen``; frozen rows are
    immutable (trigger). An amendment is a new row with ``parent_id`` and a reason."""

    __tablename__ = "protocols"
    __table_args__ = (UniqueConstraint("protocol_id", "version", name="uq_protocols_id_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(100), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text)
    yaml_text: Mapped[str] = mapped_column(Text)
    canonical_json: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    frozen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("protocols.id"), nullable=True)
    amendment_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_path: Mapped[str | None] = mapped_column(Text, nullable=True)


class SignCheckRow(Base):
    """A stored sign-check result (append-only)."""

    __tablename__ = "sign_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_pk: Mapped[int] = mapped_column(ForeignKey("protocols.id"), index=True)
    protocol_sha256: Mapped[str] = mapped_column(String(64))
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    passed: Mapped[bool] = mapped_column(Boolean)
    report_json: Mapped[str] = mapped_column(Text)


class RunRow(Base):
    """One execution of a job (or one ingested file) bound to a protocol version's sha256.

    Lifecycle: queued -> running (heartbeat, lease) -> succeeded | failed | abandoned |
    silent_noop (completed, but a knob set to a non-default value never took effect) | skipped.
    Observations of a run are written in the transaction that completes it, so they become
    visible atomically; only ``succeeded`` runs count in verdicts.
    """

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_pk: Mapped[int] = mapped_column(ForeignKey("protocols.id"), index=True)
    protocol_sha256: Mapped[str] = mapped_column(String(64), index=True)
    job: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16), default="runner")  # runner | ingest
    config_json: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hardware: Mapped[str] = mapped_column(String(64), default="cpu")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    git_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    checkpoint_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    knob_audit_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    silent_noop_knobs: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class ObservationRow(Base):
    """A per-sample number of a run: (group, item, signal) -> value, with its label."""

    __tablename__ = "observations"
    __table_args__ = (Index("ix_observations_run_signal", "run_id", "signal"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    group: Mapped[str] = mapped_column("grp", String(100))
    item: Mapped[str] = mapped_column(String(200))
    label: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    signal: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class RunColumnsRow(Base):
    """A finished run's effective observations of one group as columns (append-only, revision
    0006): a derived copy of its ``observations`` rows, written once when the run completes and
    read by verdicts instead of the rows (``ledger.store.columns``: the byte format, and the
    audit's check that it equals the rows). A group of more than ``columns.CHUNK_ROWS`` rows
    takes several chunks (``chunk`` 0..)."""

    __tablename__ = "run_columns"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    group: Mapped[str] = mapped_column("grp", String(100), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rows: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class RunTextRow(Base):
    """Generated text of one item of a run (probe outputs), kept for inspection."""

    __tablename__ = "run_texts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    item: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)


class MetricRow(Base):
    """A scalar result of a run, with an optional CI and checkpoint step (trajectories)."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    ci_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VerdictRow(Base):
    """A computed verdict (append-only) with the sha256 of the observations it used."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_pk: Mapped[int] = mapped_column(ForeignKey("protocols.id"), index=True)
    protocol_sha256: Mapped[str] = mapped_column(String(64))
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    verdict: Mapped[str] = mapped_column(String(16))
    details_json: Mapped[str] = mapped_column(Text)
    inputs_sha256: Mapped[str] = mapped_column(String(64))
    run_ids_json: Mapped[str] = mapped_column(Text, default="[]")


class CostRow(Base):
    """Money spent (append-only, hash-chained): a metered run, or a manual entry."""

    __tablename__ = "costs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True, index=True)
    protocol_pk: Mapped[int | None] = mapped_column(ForeignKey("protocols.id"), nullable=True)
    hardware: Mapped[str] = mapped_column(String(64))
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    billed_s: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rate_micros_per_hour: Mapped[int] = mapped_column(BigInteger, default=0)
    usd_micros: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class JournalEntryRow(Base):
    """A journal entry (append-only, hash-chained); corrections reference an earlier seq."""

    __tablename__ = "journal_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    protocol_pk: Mapped[int | None] = mapped_column(ForeignKey("protocols.id"), nullable=True)
    corrects_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    title: Mapped[str] = mapped_column(Text)
    body_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class VerdictLookRow(Base):
    """A `docket verdict` that found the same inputs and result as verdict ``verdict_id``
    (append-only): logged instead of a duplicate verdict row."""

    __tablename__ = "verdict_looks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_pk: Mapped[int] = mapped_column(ForeignKey("protocols.id"), index=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    inputs_sha256: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    who: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ReproductionRow(Base):
    """An attempt to reproduce a protocol claim (append-only)."""

    __tablename__ = "reproductions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_pk: Mapped[int] = mapped_column(ForeignKey("protocols.id"), index=True)
    claim: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expected: Mapped[float] = mapped_column(Float)
    observed: Mapped[float | None] = mapped_column(Float, nullable=True)
    tolerance: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class LeafRow(Base):
    """One leaf of the ledger's Merkle log (append-only, revision 0005): ``position`` 0.. with
    no gaps, the record it stands for (``kind`` + ``record_id``, the id of that kind's row),
    the canonical leaf bytes (ASCII JSON, ``ledger.integrity.leaves``) and their RFC 9162 leaf
    hash (hex). Written only by ``ledger.store.merkle_log``."""

    __tablename__ = "log_leaves"
    __table_args__ = (UniqueConstraint("kind", "record_id", name="uq_log_leaves_record"),)

    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[int] = mapped_column(Integer)
    leaf: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[str] = mapped_column(String(64))


class NodeRow(Base):
    """A complete perfect subtree of the Merkle log (append-only, revision 0005): the hash (hex)
    of leaves ``idx * 2**level .. (idx + 1) * 2**level - 1``, ``level >= 1`` (level 0 is
    ``log_leaves.leaf_hash``)."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(64))
