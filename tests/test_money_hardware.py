"""Tests of ledger.money, ledger.hardware and the receipts fixture (pure logic, no SQL)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from docketml.ledger.billing.hardware import (
    DEFAULT_HARDWARE,
    Hardware,
    HardwareConfigError,
    UnknownHardwareError,
    billed_seconds,
    cost_micros,
    default_catalog,
    hardware_config_path,
    load_catalog,
)
from docketml.ledger.billing.money import (
    MICROS_PER_USD,
    format_usd,
    micros_to_decimal,
    usd_to_micros,
)
from docketml.ledger.billing.receipts import (
    RECEIPTS_GPU_TOTAL_USD,
    receipts_bill,
    receipts_gpu_total_micros,
)

# --------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("0.43", 430_000),
        ("$0.43", 430_000),
        (" $0.43 ", 430_000),
        ("0.43 USD", 430_000),
        ("-$1,234.50", -1_234_500_000),
        (".5", 500_000),
        ("0.000001", 1),
        ("12", 12_000_000),
        (Decimal("0.43"), 430_000),
        (Decimal("1E+2"), 100_000_000),
        (2, 2_000_000),
        (0, 0),
    ],
)
def test_usd_to_micros_exact(value: str | Decimal | int, micros: int) -> None:
    assert usd_to_micros(value) == micros


@pytest.mark.parametrize("value", [0.43, 0.1, 1.0, True])
def test_float_and_bool_are_rejected(value: object) -> None:
    with pytest.raises(TypeError, match="refusing"):
        usd_to_micros(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["", "abc", "$", "0.43.1", "1,23", "0.0000001", Decimal("NaN"), Decimal("1e-7")]
)
def test_bad_amounts_are_value_errors(value: str | Decimal) -> None:
    with pytest.raises(ValueError):
        usd_to_micros(value)


def test_ten_thousand_dimes_sum_exactly_to_a_thousand_dollars() -> None:
    total = sum(usd_to_micros("0.1") for _ in range(10_000))
    assert total == usd_to_micros("1000.00") == 1_000 * MICROS_PER_USD
    assert format_usd(total) == "$1000.00"
    assert micros_to_decimal(total) == Decimal("1000")
    assert sum(0.1 for _ in range(10_000)) != 1000.0  # why floats are refused


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (430_000, "$0.43"),
        (0, "$0.00"),
        (4_999, "$0.00"),
        (5_000, "$0.01"),
        (434_999, "$0.43"),
        (435_000, "$0.44"),
        (-435_000, "-$0.44"),
        (-4_999, "$0.00"),
        (1_234_567_890, "$1234.57"),
    ],
)
def test_format_usd_rounds_half_up_to_cents(micros: int, text: str) -> None:
    assert format_usd(micros) == text


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (430_000, "$0.43"),
        (123, "$0.000123"),
        (1_234_567, "$1.234567"),
        (1_000_000, "$1.00"),
        (-5_000, "-$0.005"),
    ],
)
def test_format_usd_precise(micros: int, text: str) -> None:
    assert format_usd(micros, precise=True) == text
    assert usd_to_micros(text) == micros  # the precise form is lossless


def test_format_usd_refuses_non_int() -> None:
    with pytest.raises(TypeError):
        format_usd(0.43)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hardware math


def _hw(rate: str, setup: int = 0, gran: int = 1) -> Hardware:
    return Hardware(
        name="test", usd_per_hour=Decimal(rate), setup_seconds=setup, billing_granularity_s=gran
    )


def test_defaults_present_and_plausible() -> None:
    catalog = default_catalog()
    assert set(catalog) >= {"cpu", "rtx4090", "a40", "a100-80gb", "h100", "h200"}
    assert catalog["cpu"].usd_per_hour == 0 and not catalog["cpu"].is_gpu
    assert all(catalog[n].is_gpu for n in ("rtx4090", "a40", "a100-80gb", "h100", "h200"))
    rates = [catalog[n].usd_per_hour for n in ("a40", "a100-80gb", "h100", "h200")]
    assert rates == sorted(rates) and all(Decimal("0.1") < r < Decimal("10") for r in rates)
    assert catalog["RTX4090"] is catalog["rtx4090"]  # case-insensitive lookup
    assert len(catalog) == len(DEFAULT_HARDWARE)


def test_unknown_hardware_lists_known_names() -> None:
    with pytest.raises(UnknownHardwareError) as info:
        default_catalog()["tpu-v9"]
    assert "tpu-v9" in str(info.value) and "rtx4090" in str(info.value)
    assert default_catalog().get("tpu-v9") is None


@pytest.mark.parametrize(
    ("setup", "gran", "wall", "billed"),
    [
        (300, 60, 88.5, 420),  # ceil(388.5 / 60) = 7 minutes
        (300, 60, 0, 300),
        (0, 60, 60, 60),  # exactly on the boundary: no extra unit
        (0, 60, 60.001, 120),
        (0, 1, 88.5, 89),
        (0, 1, 0.1, 1),
        (0, 3600, Decimal("3600.000001"), 7200),
        (10, 7, 4, 14),
    ],
)
def test_billed_seconds(setup: int, gran: int, wall: float, billed: int) -> None:
    assert billed_seconds(_hw("1", setup, gran), wall) == billed


def test_cost_micros_exact_and_half_up() -> None:
    assert cost_micros(_hw("3.60"), 1) == 1_000  # $3.60/h = $0.001/s
    assert cost_micros(_hw("0.0018"), 1) == 1  # exactly 0.5 micro -> rounds up
    assert cost_micros(_hw("0.0054"), 1) == 2  # 1.5 -> 2
    assert cost_micros(_hw("0.0017"), 1) == 0  # 0.47 -> 0
    assert cost_micros(_hw("0.69", 300, 60), 88.5) == 80_500  # 420 s at $0.69/h
    assert cost_micros(default_catalog()["cpu"], 10_000) == 0
    dollar_an_hour = _hw("1", 0, 1)
    assert sum(cost_micros(dollar_an_hour, 1) for _ in range(3600)) == 3600 * 278  # no float drift


@pytest.mark.parametrize("wall", [-1, float("nan"), float("inf"), Decimal("-0.5")])
def test_bad_wall_times(wall: float) -> None:
    with pytest.raises(ValueError, match="wall_s"):
        billed_seconds(_hw("1"), wall)


def test_wall_time_type_checked() -> None:
    with pytest.raises(TypeError):
        billed_seconds(_hw("1"), "10")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- override file


def test_user_override_file_via_env(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text(
        "hardware:\n"
        "  rtx4090: {usd_per_hour: '0.34'}\n"
        "  CPU: {usd_per_hour: $0.05}\n"
        "  lab-a6000:\n"
        "    usd_per_hour: 0.69\n"
        "    is_gpu: true\n"
        "    billing_granularity_s: 1\n"
        "    description: our own box\n",
        encoding="utf-8",
    )
    catalog = load_catalog(environ={"DOCKET_HARDWARE": str(path)}, cwd=tmp_path / "elsewhere")
    assert catalog.source == path
    assert catalog["rtx4090"].usd_per_hour == Decimal("0.34")
    assert catalog["rtx4090"].setup_seconds == 300  # unspecified fields keep the built-in
    assert catalog["cpu"].usd_per_hour == Decimal("0.05")  # CPU cost only when configured
    lab = catalog["lab-a6000"]
    assert lab.usd_per_hour == Decimal("0.69")  # YAML float read via its decimal form
    assert (lab.is_gpu, lab.setup_seconds, lab.description) == (True, 0, "our own box")
    assert catalog["h100"] == default_catalog()["h100"]


def test_override_file_in_cwd_and_list_form(tmp_path: Path) -> None:
    (tmp_path / ".docket").mkdir()
    path = tmp_path / ".docket" / "hardware.yaml"
    path.write_text("hardware:\n  - name: a40\n    usd_per_hour: '0.44'\n", encoding="utf-8")
    assert hardware_config_path(environ={}, cwd=tmp_path) == path
    assert load_catalog(environ={}, cwd=tmp_path)["a40"].usd_per_hour == Decimal("0.44")
    assert hardware_config_path(environ={}, cwd=tmp_path / "none") is None
    assert load_catalog(environ={}, cwd=tmp_path / "none").source is None
    (tmp_path / ".docket" / "empty.yaml").write_text("", encoding="utf-8")
    assert len(load_catalog(tmp_path / ".docket" / "empty.yaml")) == len(DEFAULT_HARDWARE)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("hardware:\n  rtx4090:\n    usd_per_hr: 0.3\n", ["usd_per_hr", ":3:", "unknown key"]),
        ("hardware:\n  newbox: {is_gpu: true}\n", ["newbox", "usd_per_hour", "required"]),
        ("hardware:\n  a40: {usd_per_hour: -1}\n", ["a40", "usd_per_hour", ":2:"]),
        ("hardware:\n  a40: {usd_per_hour: lots}\n", ["a40", "usd_per_hour"]),
        ("hardware:\n  a40: {billing_granularity_s: 0}\n", ["billing_granularity_s"]),
        ("gpus:\n  a40: {usd_per_hour: 1}\n", ["unknown top-level key 'gpus'", ":1:"]),
        ("hardware: [1, 2]\n", ["entry #1", "name"]),
        ("hardware:\n  a40: [1]\n", ["a40", "mapping"]),
        ("hardware:\n  bad name: {usd_per_hour: 1}\n", ["bad name", "name"]),
        ("hardware: {a40: {usd_per_hour: 1}\n", ["invalid YAML"]),
        ("- 1\n- 2\n", ["expected a mapping"]),
    ],
)
def test_bad_override_file_names_file_and_key(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HardwareConfigError) as info:
        load_catalog(environ={"DOCKET_HARDWARE": str(path)})
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(HardwareConfigError, match=r"nope\.yaml"):
        load_catalog(environ={"DOCKET_HARDWARE": str(missing)})


# --------------------------------------------------------------------------- receipts


def test_receipts_bill_rows() -> None:
    rows = receipts_bill()
    assert [r["run"] for r in rows] == ["v5", "v6", "v7", "v8a", "v8b", "splice"]
    by_run = {r["run"]: r for r in rows}
    assert by_run["v7"]["hardware"] == "rtx4090"
    assert (by_run["v7"]["wall_s"], by_run["v7"]["setup_s"], by_run["v7"]["usd"]) == (
        88.5,
        300,
        "0.43",
    )
    assert [by_run[r]["usd"] for r in ("v8a", "v8b")] == ["0.18", "0.17"]
    assert all(
        by_run[r]["hardware"] == "a40" and by_run[r]["wall_s"] == 180 for r in ("v8a", "v8b")
    )
    catalog = default_catalog()
    for row in rows:
        assert row["hardware"] in catalog
        if row["hardware"] == "cpu":
            assert usd_to_micros(row["usd"]) == 0 and row["wall_s"] is None
    rows[0]["usd"] = "99"
    assert receipts_bill()[0]["usd"] == "0.00"  # fresh copies every call


def test_receipts_gpu_total_is_exactly_78_cents() -> None:
    assert receipts_gpu_total_micros() == 780_000 == usd_to_micros(RECEIPTS_GPU_TOTAL_USD)
    assert format_usd(receipts_gpu_total_micros()) == "$0.78"
    assert sum(usd_to_micros(r["usd"]) for r in receipts_bill()) == 780_000  # CPU rows are $0
