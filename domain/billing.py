"""What closed-won bills and books, as plain arithmetic: no I/O but reading the commission file.

* ``billing_plan``: how Stripe bills the deal. One installment is one invoice; several are a
  subscription whose phases reproduce ``quote.payment_schedule`` period by period. Each
  period's charges are the lines net of the discount plus one tax charge, and they add up to
  that installment exactly, to the cent, so Stripe bills what the signed order form says. Tax
  is a charge we computed (domain/tax.py is the tax engine of record), not a Stripe tax rate
  that would re-round per line.
* ``revenue_rows``: ``quote.revenue_schedule`` with real dates, month i running from the close
  date plus i months.
* ``commission``: rate and payable moment from config/commission.toml.
"""

from __future__ import annotations

import calendar
import tomllib
from datetime import date, timedelta
from decimal import Decimal
from os import PathLike
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.models import Quote
from domain.money import format_pct, minor_units, quantize

BillingMode = Literal["invoice", "subscription"]
Interval = Literal["month", "year"]

_ZERO = Decimal(0)
# Stripe caps an invoice item's description; keep ours well inside it.
_MAX_DESCRIPTION = 500


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Charge(_Frozen):
    """One invoice item or subscription item, for one billing period."""

    key: str  # stable within a deal: "line.0", "line.1", "tax"
    description: str
    amount: Decimal  # in the currency's units, e.g. Decimal("1234.50")


class Phase(_Frozen):
    """Consecutive installments billed with the same charges (a subscription schedule phase)."""

    installments: int
    period_months: int
    charges: tuple[Charge, ...]

    @property
    def amount(self) -> Decimal:
        return sum((c.amount for c in self.charges), _ZERO)

    @property
    def interval(self) -> tuple[Interval, int]:
        """Stripe's recurring interval for one period: ("year", 1) or ("month", n)."""
        if self.period_months % 12 == 0:
            return "year", self.period_months // 12
        return "month", self.period_months


class BillingPlan(_Frozen):
    mode: BillingMode  # one installment: an invoice; several: a subscription
    phases: tuple[Phase, ...]  # the payment schedule, grouped; one phase for an invoice
    first_amount: Decimal  # == quote.payment_schedule[0].amount
    tax_note: str  # printed on the invoice (reverse charge wording and the like)


def add_months(start: date, months: int) -> date:
    """``start`` plus ``months`` calendar months, the day clamped to the month's length."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def _split(total: Decimal, currency: str, weights: list[Decimal]) -> list[Decimal]:
    """``total`` in proportion to ``weights``; the rounding remainder goes on the last part."""
    whole = sum(weights, _ZERO)
    if whole == 0:
        parts = [quantize(_ZERO, currency) for _ in weights]
        parts[-1] = total
        return parts
    parts = [quantize(total * w / whole, currency) for w in weights[:-1]]
    parts.append(total - sum(parts, _ZERO))
    return parts


def billing_plan(quote: Quote) -> BillingPlan:
    """How Stripe bills ``quote``: the charges of every installment, grouped into phases.

    Each installment's pre-tax share is its months' share of the taxable amount (the last one
    takes the remainder), split across the lines by their totals; its tax is the rest of the
    installment. So every period bills exactly its ``payment_schedule`` amount.
    """
    cur = quote.currency
    schedule = quote.payment_schedule
    discount = f", less {format_pct(quote.discount_pct)} discount" if quote.discount_pct > 0 else ""
    weights = [line.line_total for line in quote.lines]
    phases: list[Phase] = []
    net_so_far = _ZERO
    for i, installment in enumerate(schedule):
        months = installment.period_months
        if quote.tax.amount == 0:
            net = installment.amount
        elif i == len(schedule) - 1:
            net = quote.taxable_amount - net_so_far
        else:
            net = quantize(quote.taxable_amount * months / quote.term_months, cur)
        net = min(net, installment.amount)  # rounding must never make a tax charge negative
        net_so_far += net
        period = f", {months} months" if len(schedule) > 1 or months != 12 else ""
        charges = [
            Charge(
                key=f"line.{n}",
                description=(
                    f"{line.description} ({line.sku}): {_plain(line.quantity)} × "
                    f"{_plain(line.unit_price)} {cur}{discount}{period}"
                )[:_MAX_DESCRIPTION],
                amount=amount,
            )
            for n, (line, amount) in enumerate(
                zip(quote.lines, _split(net, cur, weights), strict=True)
            )
        ]
        tax = installment.amount - net
        if tax != 0:
            charges.append(
                Charge(
                    key="tax",
                    description=f"Tax {format_pct(quote.tax.rate_pct)} ({quote.tax.jurisdiction})",
                    amount=tax,
                )
            )
        phase = Phase(installments=1, period_months=months, charges=tuple(charges))
        if phases and phases[-1].model_copy(update={"installments": 1}) == phase:
            phases[-1] = phases[-1].model_copy(update={"installments": phases[-1].installments + 1})
        else:
            phases.append(phase)
    return BillingPlan(
        mode="invoice" if len(schedule) == 1 else "subscription",
        phases=tuple(phases),
        first_amount=schedule[0].amount,
        tax_note=quote.tax.note,
    )


def _plain(value: Decimal) -> str:
    """A quantity or price without trailing zeros: 100, 450.5."""
    return format(value.normalize(), "f")


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Stripe's integer amount (cents, or yen) for ``amount``; refuses sub-unit amounts."""
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} is not a whole number of minor units")
    return int(scaled)


def from_minor_units(amount: int, currency: str) -> Decimal:
    return quantize(Decimal(amount).scaleb(-minor_units(currency)), currency)


class RevenueRow(_Frozen):
    month_index: int
    period_start: date
    period_end: date  # inclusive
    amount: Decimal


def revenue_rows(quote: Quote, close_date: date) -> tuple[RevenueRow, ...]:
    """Straight-line monthly revenue (the quote's schedule) dated from the close date."""
    return tuple(
        RevenueRow(
            month_index=m.month_index,
            period_start=add_months(close_date, m.month_index),
            period_end=add_months(close_date, m.month_index + 1) - timedelta(days=1),
            amount=m.amount,
        )
        for m in quote.revenue_schedule
    )


class CommissionPolicy(_Frozen):
    version: str
    rate_pct: Decimal = Field(ge=0, le=100)
    payable_on: Literal["close", "payment"]


def load_commission_policy(path: str | PathLike[str]) -> CommissionPolicy:
    with open(path, "rb") as f:
        return CommissionPolicy.model_validate(tomllib.load(f, parse_float=Decimal))


def commission(quote: Quote, policy: CommissionPolicy) -> Decimal:
    """The rep's commission: the rate applied to the contract value before tax."""
    return quantize(quote.taxable_amount * policy.rate_pct / 100, quote.currency)
