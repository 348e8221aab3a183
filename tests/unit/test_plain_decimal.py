"""Numbers never print in exponent form: one helper, used by every place a Decimal becomes text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dealflow.rendering import _format_quantity, format_pct
from domain.money import format_pct as domain_format_pct
from domain.money import plain_decimal


@pytest.mark.parametrize(
    ("value", "trimmed", "kept"),
    [
        (Decimal("10"), "10", "10"),
        (Decimal("1E+1"), "10", "10"),
        (Decimal("10").normalize(), "10", "10"),  # what normalize() makes of 10
        (Decimal("0E-8"), "0", "0.00000000"),  # a zero read from Numeric(18,8)
        (Decimal("-0.00"), "0", "0.00"),
        (Decimal("100.00"), "100", "100.00"),
        (Decimal("12.5"), "12.5", "12.5"),
        (Decimal("1.2E+7"), "12000000", "12000000"),
        (Decimal("0.0000001"), "0.0000001", "0.0000001"),  # str() would say 1E-7
        ("2E+1", "20", "20"),
        (450, "450", "450"),
    ],
)
def test_plain_decimal_never_uses_an_exponent(value, trimmed, kept):
    assert plain_decimal(value) == trimmed
    assert plain_decimal(value, trim=False) == kept
    assert "E" not in plain_decimal(value) and "e" not in plain_decimal(value, trim=False)


def test_grouping_and_refusals():
    assert plain_decimal(Decimal("1.5E+3"), grouping=True) == "1,500"
    assert plain_decimal(Decimal("1234567.250"), grouping=True) == "1,234,567.25"
    with pytest.raises(TypeError):
        plain_decimal(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        plain_decimal(Decimal("NaN"))


@pytest.mark.parametrize("fmt", [format_pct, domain_format_pct])
def test_percentages_in_documents_and_texts(fmt):
    assert fmt(Decimal("1E+1")) == "10%"
    assert fmt("2E+1") == "20%"  # the approval summary carries the percentage as text
    assert fmt(Decimal("0E-8")) == "0%"
    assert fmt(Decimal("100.00")) == "100%"
    assert fmt(Decimal("12.50")) == "12.5%"


def test_quantities_in_documents():
    assert _format_quantity(Decimal("1E+1")) == "10"
    assert _format_quantity(Decimal("1E+3")) == "1,000"
    assert _format_quantity(Decimal("0E-8")) == "0"
    assert _format_quantity(Decimal("12.5000")) == "12.5"
