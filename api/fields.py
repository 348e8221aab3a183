"""Reusable field types of the edge, built from the limits in ``dealflow.limits``.

A string the API accepts is one the store can hold: no longer than its column, and free of the
code points PostgreSQL refuses (NUL in ``text`` and ``jsonb``) or cannot encode as UTF-8 (lone
surrogates, which a JSON ``"\\ud800"`` escape can produce). Without these checks such a value
is accepted, then fails in the database (a 500) or in an activity that retries it forever.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Annotated

import pycountry
from pydantic import AfterValidator, Field, StringConstraints

from dealflow import limits

# NUL, and the UTF-16 surrogate range: neither can be stored in a PostgreSQL text column.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

# ISO 4217 codes that are not money a customer can be invoiced in: precious metals, bond-market
# and accounting units (IMF, ADB, Arab Monetary Fund), the funds codes (indexed units, next-day
# dollars), the testing code and "no currency".
NON_TENDER_CURRENCIES = frozenset(
    {"XAG", "XAU", "XPD", "XPT"}
    | {"XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XAD"}
    | {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW"}
    | {"XTS", "XXX"}
)


def storable(value: str) -> str:
    """``value`` unchanged, or ValueError naming the character PostgreSQL would refuse."""
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        char = bad.group()
        what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X})"
        raise ValueError(f"contains {what} at position {bad.start()}, which cannot be stored")
    return value


@cache
def iso_currencies() -> frozenset[str]:
    """Every active ISO 4217 alphabetic code that is money (from pycountry's ISO data)."""
    return frozenset(c.alpha_3 for c in pycountry.currencies) - NON_TENDER_CURRENCIES


def iso_currency(value: str) -> str:
    if value not in iso_currencies():
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. USD, EUR, JPY)")
    return value


def BoundedText(max_len: int, *, min_len: int = 0, strip: bool = True) -> type[str]:  # noqa: N802
    """A string of at most ``max_len`` characters that PostgreSQL can store."""
    return Annotated[  # type: ignore[return-value]
        str,
        StringConstraints(strip_whitespace=strip, min_length=min_len, max_length=max_len),
        AfterValidator(storable),
    ]


def RequiredText(max_len: int) -> type[str]:  # noqa: N802
    """A :func:`BoundedText` that must not be empty (after trimming)."""
    return BoundedText(max_len, min_len=1)


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(iso_currency)]

# Money and quantities: bounded so the largest deal still fits Numeric(18, 4) (see limits.py),
# and with at most the 4 decimals the columns hold (more is a 422, never a silent rounding).
MoneyIn = Annotated[
    Decimal,
    Field(
        ge=0,
        le=limits.MAX_UNIT_PRICE,
        decimal_places=limits.MONEY_DECIMALS,
        allow_inf_nan=False,
    ),
]
Quantity = Annotated[
    Decimal,
    Field(
        gt=0,
        le=limits.MAX_QUANTITY,
        decimal_places=limits.MONEY_DECIMALS,
        allow_inf_nan=False,
    ),
]
Pct = Annotated[
    Decimal,
    Field(
        ge=0,
        le=limits.MAX_DISCOUNT_PCT,
        decimal_places=limits.MONEY_DECIMALS,
        allow_inf_nan=False,
    ),
]
# A float that JSON (and so JSONB) can hold: no NaN or Infinity.
JsonFloat = Annotated[float, Field(allow_inf_nan=False)]
# An int that JSONB holds exactly and a reader's JSON parser does not round (2**53).
JsonInt = Annotated[int, Field(ge=-(2**53), le=2**53)]
