"""Money arithmetic: how many decimals a currency has, and rounding to them.

Every amount that is shown to a customer, invoiced or compared against a threshold is first
quantized to its currency's minor unit, so that sums printed on a document add up exactly and
the same deal always prices to the same cents (no floats, no clocks: workflow code calls this).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

DEFAULT_MINOR_UNITS = 2
"""Most ISO 4217 currencies have two decimals; used for any currency not listed below."""

MINOR_UNITS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CAD": 2,
    "AUD": 2,
    "CHF": 2,
    "JPY": 0,
    "KRW": 0,
}


def minor_units(currency: str) -> int:
    """Number of decimals of ``currency`` (2 unless the currency is known to differ)."""
    return MINOR_UNITS.get(currency.upper(), DEFAULT_MINOR_UNITS)


def _exponent(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` to the currency's minor unit, half away from zero (ROUND_HALF_UP).

    Half-up is what customers and finance expect on an invoice (0.005 -> 0.01), unlike
    Python's default banker's rounding.
    """
    return Decimal(amount).quantize(_exponent(currency), rounding=ROUND_HALF_UP)


def quantize_down(amount: Decimal, currency: str) -> Decimal:
    """Truncate ``amount`` toward zero to the currency's minor unit.

    Used by schedules as a fallback so that the installments before the last never add up to
    more than the total (which would leave a negative remainder).
    """
    return Decimal(amount).quantize(_exponent(currency), rounding=ROUND_DOWN)


def format_money(amount: Decimal, currency: str) -> str:
    """Format for people: thousands separators, the currency's decimals, code after the amount.

    ``format_money(Decimal("47500"), "USD") == "47,500.00 USD"``; ``"1,000 JPY"`` for yen.
    """
    q = quantize(amount, currency)
    return f"{q:,.{minor_units(currency)}f} {currency.upper()}"


def plain_decimal(value: Decimal | int | str, *, trim: bool = True, grouping: bool = False) -> str:
    """A number as people and JSON read it: positional digits, never exponent form.

    ``str()`` of a Decimal switches to scientific notation for a positive exponent or a long
    run of leading zeros, which ``normalize()`` produces from ordinary values: 10 normalizes
    to ``1E+1``, a zero read from ``Numeric(18,8)`` is ``0E-8``. Every Decimal that becomes
    text (API JSON, documents, Slack and email, CRM) goes through here.

    ``trim`` drops trailing fractional zeros (quantities, percentages: ``100.00`` -> "100");
    without it the digits are kept as they are (amounts already quantized: "47500.00").
    ``grouping`` adds thousands separators. A zero never prints as "-0". Floats are refused:
    numbers stay exact from the API to the PDF.
    """
    if isinstance(value, bool | float):
        raise TypeError(f"expected a Decimal, int or str, got {type(value).__name__}")
    number = value if isinstance(value, Decimal) else Decimal(value)
    if not number.is_finite():
        raise ValueError(f"not a finite number: {number}")
    if trim:
        number = number.normalize()
    if number.is_zero():
        number = abs(number)
    return format(number, ",f" if grouping else "f")


def format_pct(pct: Decimal | int | str) -> str:
    """A percentage without trailing zeros: ``19`` -> "19%", ``7.250`` -> "7.25%"."""
    return f"{plain_decimal(pct)}%"
