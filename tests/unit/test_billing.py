"""billing_plan, revenue_rows and commission: Stripe bills exactly the signed payment schedule."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from domain.billing import (
    CommissionPolicy,
    add_months,
    billing_plan,
    commission,
    from_minor_units,
    revenue_rows,
    to_minor_units,
)
from domain.pricing import price_quote
from tests.unit.factories import D, account, line, make_deal, tax_table


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"billing_frequency": "monthly"},
        {"billing_frequency": "quarterly", "term_months": 10, "discount_pct": D("7")},
        {"billing_frequency": "annual", "term_months": 30, "account": account(country="DE")},
        {
            "billing_frequency": "monthly",
            "term_months": 7,
            "currency": "JPY",
            "line_items": (line(quantity=3, unit_price="33333"), line("X", 7, "1234")),
            "account": account(region="NY"),
        },
        {
            "billing_frequency": "quarterly",
            "term_months": 36,
            "account": account(country="CA", region="ON"),
            "line_items": (line(quantity=3, unit_price="333.33"), line("X", 7, "12.34")),
        },
    ],
)
def test_every_period_bills_exactly_its_installment(overrides):
    quote = price_quote(make_deal(**overrides), tax_table())
    plan = billing_plan(quote)
    billed = [phase.amount for phase in plan.phases for _ in range(phase.installments)]
    assert billed == [i.amount for i in quote.payment_schedule]
    months = [phase.period_months for phase in plan.phases for _ in range(phase.installments)]
    assert months == [i.period_months for i in quote.payment_schedule]
    assert plan.mode == ("invoice" if len(quote.payment_schedule) == 1 else "subscription")
    assert plan.first_amount == quote.payment_schedule[0].amount
    for phase in plan.phases:
        assert all(c.amount >= 0 for c in phase.charges)
        for charge in phase.charges:
            to_minor_units(charge.amount, quote.currency)  # whole minor units, or it raises
    taxed = sum(
        (c.amount * p.installments for p in plan.phases for c in p.charges if c.key == "tax"),
        Decimal(0),
    )
    assert taxed == quote.tax.amount


def test_phases_use_stripe_intervals():
    quote = price_quote(make_deal(billing_frequency="annual", term_months=30), tax_table())
    assert [(p.installments, p.interval) for p in billing_plan(quote).phases] == [
        (2, ("year", 1)),
        (1, ("month", 6)),
    ]


def test_add_months_clamps_to_the_end_of_the_month():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2027, 11, 15), 14) == date(2029, 1, 15)


def test_revenue_rows_are_dated_from_the_close_date_and_add_up():
    quote = price_quote(make_deal(term_months=14, discount_pct=D("7")), tax_table())
    rows = revenue_rows(quote, date(2027, 1, 31))
    assert len(rows) == 14
    assert sum(r.amount for r in rows) == quote.taxable_amount
    assert (rows[0].period_start, rows[0].period_end) == (date(2027, 1, 31), date(2027, 2, 27))
    assert all(a.period_end < b.period_start for a, b in zip(rows, rows[1:], strict=False))


def test_commission_is_the_rate_on_the_pre_tax_value():
    quote = price_quote(make_deal(account=account(country="DE")), tax_table())
    policy = CommissionPolicy(version="t", rate_pct=D("8.5"), payable_on="close")
    assert commission(quote, policy) == D("850.00")


def test_minor_units_round_trip_and_refuse_fractions():
    assert to_minor_units(D("47500.00"), "USD") == 4750000
    assert to_minor_units(D("1234"), "JPY") == 1234
    assert from_minor_units(4750000, "usd") == D("47500.00")
    with pytest.raises(ValueError):
        to_minor_units(D("0.001"), "USD")
