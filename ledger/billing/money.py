"""Money as integer micro-dollars (1 USD = 1_000_000 micros).

Contract: amounts are parsed exactly from ``str`` / ``Decimal`` / ``int`` and stored and
summed as ``int`` micros, so sums are exact (ten thousand times ``"0.1"`` is exactly
``1000.00``). ``float`` input is refused with :class:`TypeError`: binary floats cannot
hold most cent values and are never summed. Display rounds half up (away from zero) to
cents; :func:`format_usd` with ``precise=True`` shows every non-zero micro digit.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "MAX_MICROS",
    "MICROS_PER_USD",
    "check_micros",
    "format_usd",
    "micros_to_decimal",
    "usd_to_micros",
]

MICROS_PER_USD = 1_000_000
#: The largest amount a ledger money column (signed 64-bit on both backends) can hold.
MAX_MICROS = 2**63 - 1

_USD_RE = re.compile(
    r"^(?P<sign>[-+])?\s*\$?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?:\s*usd)?$",
    re.IGNORECASE,
)


def _decimal_to_micros(value: Decimal, shown: object) -> int:
    if not value.is_finite():
        raise ValueError(f"not a finite dollar amount: {shown!r}")
    numerator, denominator = value.as_integer_ratio()
    micros, remainder = divmod(numerator * MICROS_PER_USD, denominator)
    if remainder:
        raise ValueError(f"{shown!r} has more precision than a micro-dollar (6 decimal places)")
    return check_micros(micros, shown)


def check_micros(micros: int, shown: object = None) -> int:
    """Return ``micros`` if the ledger can store it (``|micros| <= MAX_MICROS``), else raise
    ValueError naming the bound: the one rule for how much money fits in a row."""
    if abs(micros) > MAX_MICROS:
        raise ValueError(
            f"{micros if shown is None else shown!r} is too large: at most "
            f"${MAX_MICROS // MICROS_PER_USD:,} fits in the ledger"
        )
    return micros


def usd_to_micros(value: str | Decimal | int) -> int:
    """Dollars -> integer micro-dollars, exactly.

    Accepts ``int`` (whole dollars), ``Decimal``, or a string such as ``"0.43"``,
    ``"$0.43"``, ``"-$1,234.5"``, ``"0.43 USD"``. Raises TypeError for ``float`` (and
    ``bool``), ValueError for malformed text, non-finite values, more than six
    decimal places (which a micro-dollar cannot represent exactly), or an amount beyond
    :data:`MAX_MICROS` (which no ledger row can hold).
    """
    if isinstance(value, (bool, float)):
        raise TypeError(
            f"refusing {type(value).__name__} {value!r} as money: pass a str or Decimal "
            "(floats are inexact and are never summed)"
        )
    if isinstance(value, int):
        return check_micros(value * MICROS_PER_USD, value)
    if isinstance(value, Decimal):
        return _decimal_to_micros(value, value)
    if isinstance(value, str):
        m = _USD_RE.match(value.strip())
        if not m:
            raise ValueError(f"not a dollar amount: {value!r} (expected e.g. '0.43' or '$0.43')")
        micros = _decimal_to_micros(Decimal(m["num"].replace(",", "")), value)
        return -micros if m["sign"] == "-" else micros
    raise TypeError(f"cannot read {type(value).__name__} {value!r} as dollars")


def micros_to_decimal(micros: int) -> Decimal:
    """Integer micros -> exact ``Decimal`` dollars (``430000 -> Decimal("0.430000")``)."""
    _check_int(micros)
    return Decimal(micros).scaleb(-6)


def _check_int(micros: object) -> None:
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micros must be an int, got {type(micros).__name__} {micros!r}")


def format_usd(micros: int, *, precise: bool = False) -> str:
    """Format micros as dollars.

    Default: cents, rounded half up (away from zero): ``430000 -> "$0.43"``,
    ``5000 -> "$0.01"``, ``-4999 -> "$0.00"``, ``-1_500_000 -> "-$1.50"``.
    ``precise=True``: exact, trailing zeros trimmed to at least cents:
    ``123 -> "$0.000123"``, ``430000 -> "$0.43"``, ``1_234_567 -> "$1.234567"``.
    """
    _check_int(micros)
    magnitude = abs(micros)
    if precise:
        dollars, frac = divmod(magnitude, MICROS_PER_USD)
        digits = f"{frac:06d}".rstrip("0").ljust(2, "0")
        body = f"{dollars}.{digits}"
        negative = micros < 0
    else:
        cents = (magnitude + 5_000) // 10_000
        body = f"{cents // 100}.{cents % 100:02d}"
        negative = micros < 0 and cents > 0
    return f"{'-' if negative else ''}${body}"
