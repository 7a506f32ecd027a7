"""The bill: every cost row of the ledger, grouped, with exact totals; and the receipts import.

Contract of :func:`bill`:

* One :class:`BillLine` per cost row (metered runs and manual entries), in ``seq`` order.
* ``by``: ``run`` (a metered run's costs together, keyed ``run <id> <job>``; a manual entry by its
  label, else ``manual #<seq>``), ``protocol`` (protocol id, or ``(none)``), ``hardware`` (the
  name stored on the row) or ``month`` (``YYYY-MM`` of the row's UTC time). Groups appear in the
  order of their first row.
* Money is integer micro-dollars, summed as ints (never floats); formatted strings are for
  display only (:func:`ledger.money.format_usd`, rounded half up to cents).
* GPU vs CPU: ``is_gpu`` comes from the hardware catalog (built-ins plus the user's
  ``hardware.yaml``). A hardware name the catalog does not know (e.g. an old row after the user
  renamed a machine) is kept under its stored name, marked ``unknown``, and totalled separately,
  so ``total = gpu + cpu + unknown`` always holds.

:func:`import_receipts` records the seed receipts' bill (:mod:`ledger.receipts`) as manual cost
entries with the **recorded** dollars (not recomputed from catalog rates), labelled
``receipts:<run>``. It is idempotent: a label already in the ledger is skipped, wherever it was
imported (so the same money is never counted twice, even under another protocol).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import UserError
from ..store.inspect import get_run
from ..store.models import CostRow, ProtocolRow, RunRow
from .costs import append_cost
from .hardware import HardwareCatalog, HardwareConfigError, load_catalog
from .money import format_usd, usd_to_micros
from .receipts import receipts_bill

__all__ = [
    "GROUPINGS",
    "RECEIPTS_LABEL_PREFIX",
    "Bill",
    "BillGroup",
    "BillLine",
    "add_manual_cost",
    "bill",
    "import_receipts",
    "parse_seconds",
    "user_catalog",
]

GROUPINGS = ("run", "protocol", "hardware", "month")
Grouping = Literal["run", "protocol", "hardware", "month"]
RECEIPTS_LABEL_PREFIX = "receipts:"


def user_catalog() -> HardwareCatalog:
    """The hardware catalog with the user's overrides; a bad override file is a UserError."""
    try:
        return load_catalog()
    except HardwareConfigError as exc:
        raise UserError(str(exc)) from None


@dataclass(frozen=True)
class BillLine:
    """One cost row as shown on the bill."""

    seq: int
    at: str  # ISO 8601, UTC
    month: str  # YYYY-MM (UTC)
    entry: str  # "run 12 probe_base", or the manual entry's label, or "manual #7"
    run_id: int | None
    job: str | None
    label: str | None
    protocol: str | None
    protocol_version: int | None
    hardware: str
    hardware_class: str  # "gpu" | "cpu" | "unknown"
    wall_s: float | None
    billed_s: int | None
    rate_micros_per_hour: int
    usd_micros: int
    usd: str
    note: str | None


@dataclass
class BillGroup:
    """The lines sharing one key, with their exact subtotal."""

    key: str
    lines: list[BillLine] = field(default_factory=list)

    @property
    def total_micros(self) -> int:
        return sum(line.usd_micros for line in self.lines)


@dataclass
class Bill:
    """Grouped lines and exact totals (``total == gpu + cpu + unknown``)."""

    by: str
    groups: list[BillGroup]
    unknown_hardware: list[str]

    def _sum(self, cls: str | None = None) -> int:
        return sum(
            line.usd_micros
            for group in self.groups
            for line in group.lines
            if cls is None or line.hardware_class == cls
        )

    @property
    def total_micros(self) -> int:
        return self._sum()

    @property
    def gpu_micros(self) -> int:
        return self._sum("gpu")

    @property
    def cpu_micros(self) -> int:
        return self._sum("cpu")

    @property
    def unknown_micros(self) -> int:
        return self._sum("unknown")

    @property
    def lines(self) -> list[BillLine]:
        return sorted((line for g in self.groups for line in g.lines), key=lambda x: x.seq)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form: micros as ints next to their formatted strings."""
        return {
            "by": self.by,
            "currency": "USD",
            "groups": [
                {
                    "key": g.key,
                    "total_micros": g.total_micros,
                    "total": format_usd(g.total_micros),
                    "lines": [asdict(line) for line in g.lines],
                }
                for g in self.groups
            ],
            "total_micros": self.total_micros,
            "total": format_usd(self.total_micros),
            "gpu_micros": self.gpu_micros,
            "gpu": format_usd(self.gpu_micros),
            "cpu_micros": self.cpu_micros,
            "cpu": format_usd(self.cpu_micros),
            "unknown_hardware_micros": self.unknown_micros,
            "unknown_hardware": self.unknown_hardware,
        }


def _key(line: BillLine, by: str) -> str:
    if by == "run":
        return line.entry
    if by == "protocol":
        return line.protocol or "(none)"
    if by == "hardware":
        return line.hardware if line.hardware_class != "unknown" else f"{line.hardware} (unknown)"
    return line.month


def bill(
    session: Session,
    by: Grouping = "run",
    *,
    protocol_id: str | None = None,
    catalog: HardwareCatalog | None = None,
) -> Bill:
    """The bill grouped ``by`` run | protocol | hardware | month (module docstring); with
    ``protocol_id``, only the costs of that protocol (all its versions)."""
    if by not in GROUPINGS:
        raise UserError(f"--by {by!r}: expected one of {', '.join(GROUPINGS)}")
    catalog = catalog if catalog is not None else user_catalog()
    query = (
        select(CostRow, ProtocolRow.protocol_id, ProtocolRow.version, RunRow.job)
        .outerjoin(ProtocolRow, ProtocolRow.id == CostRow.protocol_pk)
        .outerjoin(RunRow, RunRow.id == CostRow.run_id)
        .order_by(CostRow.seq)
    )
    if protocol_id is not None:
        query = query.where(ProtocolRow.protocol_id == protocol_id)
    groups: dict[str, BillGroup] = {}
    unknown: list[str] = []
    for cost, pid, version, job in session.execute(query):
        if cost.hardware in catalog:
            hw_class = "gpu" if catalog[cost.hardware].is_gpu else "cpu"
        else:
            hw_class = "unknown"
            if cost.hardware not in unknown:
                unknown.append(cost.hardware)
        at = cost.at
        if cost.run_id is not None:
            entry = f"run {cost.run_id} {job}" if job else f"run {cost.run_id}"
        else:
            entry = cost.label or f"manual #{cost.seq}"
        line = BillLine(
            seq=cost.seq,
            at=at.isoformat(),
            month=at.strftime("%Y-%m"),
            entry=entry,
            run_id=cost.run_id,
            job=job,
            label=cost.label,
            protocol=pid,
            protocol_version=version,
            hardware=cost.hardware,
            hardware_class=hw_class,
            wall_s=cost.wall_s,
            billed_s=cost.billed_s,
            rate_micros_per_hour=int(cost.rate_micros_per_hour or 0),
            usd_micros=int(cost.usd_micros),
            usd=format_usd(int(cost.usd_micros)),
            note=cost.note,
        )
        key = _key(line, by)
        groups.setdefault(key, BillGroup(key)).lines.append(line)
    return Bill(by=by, groups=list(groups.values()), unknown_hardware=unknown)


def import_receipts(session: Session, protocol_pk: int | None = None) -> dict[str, Any]:
    """Record the receipts' bill as manual cost entries (module docstring); returns
    ``{"imported": [labels], "skipped": [labels], "gpu_micros": ..., "total_micros": ...}`` for
    the rows imported by this call."""
    from ..store.chainlock import lock_chain
    from .hardware import default_catalog

    lock_chain(session, "costs")  # the existence check and the appends are one critical section
    rows = receipts_bill()
    labels = [RECEIPTS_LABEL_PREFIX + r["run"] for r in rows]
    present = set(session.scalars(select(CostRow.label).where(CostRow.label.in_(labels))))
    catalog = default_catalog()
    imported: list[str] = []
    skipped: list[str] = []
    gpu = total = 0
    for row, label in zip(rows, labels, strict=True):
        if label in present:
            skipped.append(label)
            continue
        micros = usd_to_micros(row["usd"])
        wall = row["wall_s"]
        parts = [row["hardware_label"]]
        if wall is not None:
            shown = f"~{wall:g} s" if row["wall_approx"] else f"{wall:g} s"
            if row["setup_s"]:
                shown += f" + {row['setup_s']} s setup"
            parts.append(shown)
        parts.append(f"{row['note']}; recorded ${row['usd']} (receipts, seed 000)")
        append_cost(
            session,
            hardware=row["hardware"],
            usd_micros=micros,
            protocol_pk=protocol_pk,
            wall_s=wall,
            billed_s=None,
            rate_micros=0,
            label=label,
            note="; ".join(parts),
        )
        imported.append(label)
        total += micros
        if catalog[row["hardware"]].is_gpu:
            gpu += micros
    return {"imported": imported, "skipped": skipped, "gpu_micros": gpu, "total_micros": total}


def parse_seconds(raw: str, flag: str = "--seconds") -> Decimal:
    """Exact seconds from CLI text (``"180"``, ``"88.5"``); :class:`UserError` naming ``flag``."""
    try:
        value = Decimal(raw.strip().removesuffix("s").strip())
    except InvalidOperation:
        raise UserError(f"{flag} {raw!r}: not a number of seconds (e.g. 180 or 88.5)") from None
    if not value.is_finite() or value < 0:
        raise UserError(f"{flag} {raw!r}: must be a finite number of seconds >= 0")
    return value


def add_manual_cost(
    session: Session,
    *,
    hardware: str,
    seconds: Decimal | None = None,
    usd_micros: int | None = None,
    protocol_pk: int | None = None,
    label: str | None = None,
    note: str | None = None,
    catalog: HardwareCatalog | None = None,
    run_id: int | None = None,
) -> CostRow:
    """Append a manual cost entry (spend outside ``docket run``).

    With ``run_id`` the entry is attached to that run (``docket cost add --run``, ``docket
    ingest --hardware``): the run must exist and have ended (:class:`UserError` otherwise), the
    entry takes the run's protocol version (``protocol_pk`` must then be None) and, without
    ``label``, the run's job as its label, and ``runs.cost_micros`` is set to the sum of the run's
    cost rows (:func:`ledger.billing.costs.settle_run_cost`).

    ``hardware`` must be in the catalog (:class:`UserError` listing the known names otherwise).
    With ``usd_micros`` the recorded dollars are stored as given (``rate_micros_per_hour`` 0 marks
    a recorded, not computed, amount; ``seconds``, if any, is kept as the wall time). Without it
    the dollars are computed from ``seconds`` exactly as for a metered run
    (:func:`ledger.hardware.cost_micros`: setup overhead, billing granularity, hourly rate) and
    the billed seconds and rate are stored. One of the two is required; amounts are >= 0.
    """
    from .costs import rate_micros_per_hour, settle_run_cost
    from .hardware import UnknownHardwareError, billed_seconds, cost_micros

    if run_id is not None:
        try:
            run = get_run(session, run_id)
        except UserError as exc:
            raise UserError(f"--run {run_id}: {exc}") from None
        if run.status in ("queued", "running"):
            raise UserError(
                f"--run {run_id}: the run is {run.status}; attach a cost after it has ended "
                "(its metered cost is written when it finishes)"
            )
        if protocol_pk is not None and protocol_pk != run.protocol_pk:
            raise UserError(f"--run {run_id} belongs to another protocol than --protocol")
        protocol_pk = run.protocol_pk
        label = label if label is not None else run.job
    catalog = catalog if catalog is not None else user_catalog()
    try:
        hw = catalog[hardware]
    except UnknownHardwareError as exc:
        raise UserError(f"--hardware: {exc}") from None
    if usd_micros is None and seconds is None:
        raise UserError("give --seconds (cost computed from the hardware catalog) and/or --usd")
    if usd_micros is not None and usd_micros < 0:
        raise UserError(f"--usd: a cost must be >= 0, got {format_usd(usd_micros, precise=True)}")
    billed: int | None = None
    rate = 0
    if usd_micros is None:
        assert seconds is not None
        billed = billed_seconds(hw, seconds)
        usd_micros = cost_micros(hw, seconds)
        rate = rate_micros_per_hour(hw)
    row = append_cost(
        session,
        hardware=hw.name,
        usd_micros=usd_micros,
        run_id=run_id,
        protocol_pk=protocol_pk,
        wall_s=None if seconds is None else float(seconds),
        billed_s=billed,
        rate_micros=rate,
        label=label,
        note=note,
    )
    if run_id is not None:
        settle_run_cost(session, run_id)
    return row
