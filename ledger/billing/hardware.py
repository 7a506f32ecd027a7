"""Hardware catalog and billing math (pure logic, no SQL).

Billing contract, for hardware ``hw`` and a measured wall time ``wall_s`` (seconds)::

    billed_seconds(hw, wall_s) = ceil((wall_s + hw.setup_seconds) / g) * g,
                                 g = hw.billing_granularity_s
    cost_micros(hw, wall_s)    = round_half_up(billed_seconds * hw.usd_per_hour * 1e6 / 3600)

Both are computed exactly in rational integer arithmetic (``Decimal.as_integer_ratio``);
a ``float`` wall time is read through its shortest decimal form (``88.5`` -> ``Decimal
("88.5")``). Money is integer micro-dollars (see :mod:`ledger.money`).

The built-in rates are typical community/secure-cloud on-demand list prices in 2026
(RunPod-style per-GPU-hour pricing; approximate, not a quote) and are meant to be
overridden. Receipts record actual dollars, so they are not recomputed from these rates.

User overrides: a YAML file at ``$DOCKET_HARDWARE`` or else ``<cwd>/.docket/hardware.yaml``::

    hardware:
      rtx4090: {usd_per_hour: "0.34"}          # partial override of a built-in
      lab-a6000:                               # a new name: usd_per_hour required
        usd_per_hour: 0
        is_gpu: true
        description: our own box

A list of mappings with a ``name`` key is accepted as well. Fields are exactly those of
:class:`Hardware`; an unknown field raises :class:`HardwareConfigError` naming the file,
line and key, and so does a value out of bounds (``usd_per_hour`` at most ``MAX_USD_PER_HOUR``,
``setup_seconds`` and ``billing_granularity_s`` at most a day): with them and a billed wall time
of at most ``MAX_WALL_S`` every cost fits the ledger's 64-bit micro-dollar column.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from docketml.protocols.reading import FileRefused, read_bounded

from ..errors import UserError
from .money import check_micros

__all__ = [
    "DEFAULT_HARDWARE",
    "ENV_VAR",
    "Hardware",
    "HardwareCatalog",
    "HardwareConfigError",
    "UnknownHardwareError",
    "billed_seconds",
    "cost_micros",
    "default_catalog",
    "hardware_config_path",
    "load_catalog",
    "wall_seconds",
]

ENV_VAR = "DOCKET_HARDWARE"
MAX_HARDWARE_BYTES = 1_000_000
#: Upper bounds of a machine's billing fields. With them a run's cost fits the ledger's 64-bit
#: micro-dollar column for any wall time under 1,000 years (``cost_micros`` checks the rest).
MAX_USD_PER_HOUR = Decimal(1_000_000)
MAX_SETUP_SECONDS = 86_400
MAX_GRANULARITY_S = 86_400
#: The longest wall time billed (ten years); with the bounds above the cost then fits.
MAX_WALL_S = 315_360_000
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")


class Hardware(BaseModel):
    """One billable machine type.

    ``usd_per_hour`` is exact (``Decimal``; a YAML float is read via its shortest decimal
    form, never summed); ``setup_seconds`` is per-run overhead that is billed;
    billed seconds are rounded UP to a multiple of ``billing_granularity_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    usd_per_hour: Decimal = Field(ge=0, le=MAX_USD_PER_HOUR)
    setup_seconds: int = Field(default=0, ge=0, le=MAX_SETUP_SECONDS)
    billing_granularity_s: int = Field(default=1, ge=1, le=MAX_GRANULARITY_S)
    is_gpu: bool = False
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        name = value.strip().lower()
        if not _NAME_RE.match(name):
            raise ValueError(f"hardware name {value!r} must match [a-z0-9][a-z0-9_.+-]*")
        return name

    @field_validator("usd_per_hour", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Decimal:
        if isinstance(value, bool):
            raise ValueError("must be a number of dollars per hour")
        if isinstance(value, float):
            value = repr(value)  # config input only: 0.69 -> "0.69", never summed as float
        if isinstance(value, str):
            value = value.strip().removeprefix("$").strip()
        try:
            rate = Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number of dollars per hour") from None
        if not rate.is_finite():
            raise ValueError("must be finite")
        return rate


# Typical 2026 community/secure-cloud on-demand list prices (USD per GPU-hour), e.g.
# RunPod's public price list; approximate and user-overridable via hardware.yaml.
# GPU setup_seconds=300 is the pod start/image pull/model load overhead recorded in the
# receipts (v7: "88.5 s + 5 min setup"); billing_granularity_s=60 assumes per-minute
# billing (conservative; set 1 for per-second billing).
DEFAULT_HARDWARE: tuple[Hardware, ...] = (
    Hardware(
        name="cpu",
        usd_per_hour=Decimal("0"),
        setup_seconds=0,
        billing_granularity_s=1,
        is_gpu=False,
        description="Local CPU: $0 unless configured",
    ),
    Hardware(
        name="rtx4090",
        usd_per_hour=Decimal("0.69"),
        setup_seconds=300,
        billing_granularity_s=60,
        is_gpu=True,
        description="NVIDIA RTX 4090 24 GB, secure cloud",
    ),
    Hardware(
        name="a40",
        usd_per_hour=Decimal("0.40"),
        setup_seconds=300,
        billing_granularity_s=60,
        is_gpu=True,
        description="NVIDIA A40 48 GB",
    ),
    Hardware(
        name="a100-80gb",
        usd_per_hour=Decimal("1.64"),
        setup_seconds=300,
        billing_granularity_s=60,
        is_gpu=True,
        description="NVIDIA A100 80 GB PCIe",
    ),
    Hardware(
        name="h100",
        usd_per_hour=Decimal("2.69"),
        setup_seconds=300,
        billing_granularity_s=60,
        is_gpu=True,
        description="NVIDIA H100 80 GB SXM",
    ),
    Hardware(
        name="h200",
        usd_per_hour=Decimal("3.59"),
        setup_seconds=300,
        billing_granularity_s=60,
        is_gpu=True,
        description="NVIDIA H200 141 GB SXM",
    ),
)


class HardwareConfigError(UserError, ValueError):
    """A bad hardware override file; the message names the file (and line, key). A
    :class:`ledger.errors.UserError`: exit 2 with that one line wherever it is raised."""


class UnknownHardwareError(KeyError):
    """Lookup of a hardware name that is not in the catalog; lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown hardware"


class HardwareCatalog(Mapping[str, Hardware]):
    """Read-only mapping ``name -> Hardware``; lookups are case-insensitive.

    ``source`` is the override file the catalog was loaded from (``None``: built-ins only).
    """

    def __init__(self, items: Iterable[Hardware], source: Path | None = None) -> None:
        self._items = {hw.name: hw for hw in items}
        self.source = source

    def __getitem__(self, name: str) -> Hardware:
        key = name.strip().lower()
        try:
            return self._items[key]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UnknownHardwareError(
                f"unknown hardware {name!r}; known: {known} "
                f"(add it to .docket/hardware.yaml or ${ENV_VAR})"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"HardwareCatalog({sorted(self._items)}, source={self.source!r})"


def default_catalog() -> HardwareCatalog:
    """The built-in catalog (:data:`DEFAULT_HARDWARE`) without any user override."""
    return HardwareCatalog(DEFAULT_HARDWARE)


def hardware_config_path(
    environ: Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> Path | None:
    """The override file to use: ``$DOCKET_HARDWARE`` if set (non-empty), else
    ``<cwd>/.docket/hardware.yaml`` if it exists, else ``None``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    candidate = Path(cwd if cwd is not None else Path.cwd()) / ".docket" / "hardware.yaml"
    return candidate if candidate.is_file() else None


def _key_line(text: str, keys: list[Any]) -> int | None:
    """1-based line of the node at ``keys`` (mapping keys / list indices) in YAML ``text``."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _where(path: Path, text: str, keys: list[Any]) -> str:
    line = _key_line(text, keys)
    return f"{path}:{line}" if line else str(path)


def _parse_overrides(path: Path, text: str) -> list[tuple[str, dict[str, Any], list[Any]]]:
    """The file's entries as ``(name, fields, yaml_key_path)``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HardwareConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise HardwareConfigError(f"{path}: expected a mapping with a 'hardware' key")
    for key in data:
        if key != "hardware":
            raise HardwareConfigError(
                f"{_where(path, text, [key])}: unknown top-level key {key!r} (expected 'hardware')"
            )
    section = data.get("hardware") or {}
    out: list[tuple[str, dict[str, Any], list[Any]]] = []
    if isinstance(section, dict):
        for name, fields in section.items():
            keys: list[Any] = ["hardware", name]
            if fields is None:
                fields = {}
            if not isinstance(fields, dict):
                raise HardwareConfigError(
                    f"{_where(path, text, keys)}: hardware {name!r}: expected a mapping of fields"
                )
            fields = dict(fields)
            if "name" in fields and str(fields.pop("name")).strip().lower() != str(name).lower():
                raise HardwareConfigError(
                    f"{_where(path, text, [*keys, 'name'])}: hardware {name!r}: "
                    "'name' differs from its key"
                )
            out.append((str(name), fields, keys))
    elif isinstance(section, list):
        for i, fields in enumerate(section):
            keys = ["hardware", i]
            if not isinstance(fields, dict) or "name" not in fields:
                raise HardwareConfigError(
                    f"{_where(path, text, keys)}: hardware entry #{i + 1}: "
                    "expected a mapping with a 'name' key"
                )
            fields = dict(fields)
            out.append((str(fields.pop("name")), fields, keys))
    else:
        raise HardwareConfigError(
            f"{_where(path, text, ['hardware'])}: 'hardware' must be a mapping name -> fields"
        )
    return out


def load_catalog(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> HardwareCatalog:
    """Built-in catalog merged with the user override file.

    ``path`` (explicit) or :func:`hardware_config_path` chooses the file; a missing file
    named explicitly or by ``$DOCKET_HARDWARE`` is an error. For a built-in name the given
    fields replace the built-in ones; a new name needs at least ``usd_per_hour``.
    Raises :class:`HardwareConfigError` naming file, line and key.
    """
    file = Path(path) if path is not None else hardware_config_path(environ, cwd)
    items = {hw.name: hw for hw in DEFAULT_HARDWARE}
    if file is None:
        return HardwareCatalog(items.values())
    try:
        raw = read_bounded(file, MAX_HARDWARE_BYTES, "hardware YAML file")
    except FileRefused as exc:
        raise HardwareConfigError(f"{file}: cannot read hardware file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise HardwareConfigError(
            f"{file}:{line}: not valid UTF-8 at byte {exc.start}; expected a UTF-8 YAML file"
        ) from None
    allowed = [f for f in Hardware.model_fields if f != "name"]
    for name, fields, keys in _parse_overrides(file, text):
        for key in fields:
            if key not in allowed:
                raise HardwareConfigError(
                    f"{_where(file, text, [*keys, key])}: hardware {name!r}: unknown key "
                    f"{key!r} (allowed: {', '.join(allowed)})"
                )
        base = items.get(name.strip().lower())
        merged = {**(base.model_dump() if base else {}), **fields, "name": name}
        try:
            hw = Hardware(**merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "?"
            msg = "required for a new hardware name" if err["type"] == "missing" else err["msg"]
            where = _where(file, text, keys + ([field] if field in fields else []))
            raise HardwareConfigError(f"{where}: hardware {name!r}: {field}: {msg}") from None
        items[hw.name] = hw
    return HardwareCatalog(items.values(), source=file)


def wall_seconds(value: int | float | Decimal, what: str = "wall_s") -> Decimal:
    """``value`` as exact seconds; TypeError for a non-number, ValueError unless it is finite
    and in ``0..MAX_WALL_S`` (the one bound of a billed wall time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    seconds = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not seconds.is_finite() or not 0 <= seconds <= MAX_WALL_S:
        raise ValueError(f"{what} must be a finite number of seconds in 0..{MAX_WALL_S}")
    return seconds


def billed_seconds(hw: Hardware, wall_s: int | float | Decimal) -> int:
    """``ceil((wall_s + setup_seconds) / g) * g`` with ``g = billing_granularity_s``, exact."""
    total = wall_seconds(wall_s) + hw.setup_seconds
    num, den = total.as_integer_ratio()
    gran = hw.billing_granularity_s
    return -(-num // (den * gran)) * gran


def cost_micros(hw: Hardware, wall_s: int | float | Decimal) -> int:
    """``round_half_up(billed_seconds(hw, wall_s) * usd_per_hour * 1e6 / 3600)`` micros, exact.

    Raises ValueError (:func:`money.check_micros`) when the cost would not fit the ledger."""
    billed = billed_seconds(hw, wall_s)
    rate_num, rate_den = hw.usd_per_hour.as_integer_ratio()
    num = billed * rate_num * 1_000_000
    den = rate_den * 3600
    return check_micros((2 * num + den) // (2 * den), f"the cost of {wall_s} s on {hw.name}")
