"""price_quote and verify_quote: sums, rounding, schedules, and catching tampered quotes."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.money import format_money, minor_units, quantize
from domain.pricing import price_quote, verify_quote
from tests.unit.factories import D, account, deal_with_total, line, make_deal, tax_table

# --- money --------------------------------------------------------------------------------


def test_quantize_rounds_half_up_not_bankers():
    assert quantize(D("0.125"), "USD") == D("0.13")
    assert quantize(D("0.005"), "EUR") == D("0.01")
    assert quantize(D("2.5"), "JPY") == D("3")


def test_zero_decimal_currencies_and_default_two_decimals():
    assert minor_units("JPY") == 0
    assert minor_units("KRW") == 0
    assert minor_units("CHF") == 2
    assert minor_units("SEK") == 2  # not listed: default


def test_format_money_groups_thousands_and_appends_code():
    assert format_money(D("47500"), "USD") == "47,500.00 USD"
    assert format_money(D("1234567.891"), "EUR") == "1,234,567.89 EUR"
    assert format_money(D("1000"), "JPY") == "1,000 JPY"
    assert format_money(D("0"), "GBP") == "0.00 GBP"


# --- lines, discount, totals -----------------------------------------------------------------


def test_line_total_is_quantity_times_price_rounded_half_up():
    deal = make_deal(line_items=(line(quantity=3, unit_price="33.333"),))
    quote = price_quote(deal, tax_table())
    assert quote.lines[0].line_total == D("100.00")  # 99.999 -> 100.00
    assert quote.subtotal == D("100.00")
    assert verify_quote(quote) == []


def test_fractional_quantity_is_priced_and_rounded():
    deal = make_deal(line_items=(line(quantity="2.5", unit_price="19.99"),))
    quote = price_quote(deal, tax_table())
    assert quote.lines[0].line_total == D("49.98")  # 49.975 half-up


def test_subtotal_is_sum_of_rounded_lines():
    deal = make_deal(
        line_items=(
            line("A", quantity=3, unit_price="33.333"),  # 100.00
            line("B", quantity=1, unit_price="0.005"),  # 0.01
            line("C", quantity=7, unit_price="142.857"),  # 999.999 -> 1000.00
        )
    )
    quote = price_quote(deal, tax_table())
    assert [ln.line_total for ln in quote.lines] == [D("100.00"), D("0.01"), D("1000.00")]
    assert quote.subtotal == D("1100.01")


def test_discount_producing_half_cent_rounds_up():
    deal = make_deal(line_items=(line(quantity=1, unit_price="100.10"),), discount_pct=D(5))
    quote = price_quote(deal, tax_table())
    assert quote.discount == D("5.01")  # 5.005
    assert quote.taxable_amount == D("95.09")
    assert quote.total == D("95.09")
    assert verify_quote(quote) == []


def test_zero_discount_leaves_subtotal_untouched():
    quote = price_quote(make_deal(discount_pct=D(0)), tax_table())
    assert quote.discount == D("0.00")
    assert quote.taxable_amount == quote.subtotal == quote.total == D("10000.00")


def test_full_discount_makes_everything_zero():
    deal = make_deal(
        discount_pct=D(100),
        term_months=36,
        billing_frequency="quarterly",
        account=account(country="DE", region=None),
    )
    quote = price_quote(deal, tax_table())
    assert quote.discount == quote.subtotal == D("10000.00")
    assert quote.taxable_amount == 0
    assert quote.tax.amount == 0
    assert quote.total == 0
    assert len(quote.payment_schedule) == 12
    assert all(inst.amount == 0 for inst in quote.payment_schedule)
    assert all(m.amount == 0 for m in quote.revenue_schedule)
    assert verify_quote(quote) == []


def test_tax_is_added_to_total_but_not_to_revenue():
    deal = make_deal(account=account(country="DE", region=None))  # 19 % VAT, no VAT id
    quote = price_quote(deal, tax_table())
    assert quote.tax.amount == D("1900.00")
    assert quote.total == D("11900.00")
    assert sum(i.amount for i in quote.payment_schedule) == D("11900.00")
    assert sum(m.amount for m in quote.revenue_schedule) == D("10000.00")
    assert verify_quote(quote) == []


def test_jpy_quote_has_no_decimals_anywhere():
    deal = make_deal(
        currency="JPY",
        line_items=(line(quantity=3, unit_price="333.5"),),  # 1000.5 -> 1001
        discount_pct=D(10),  # 100.1 -> 100
        term_months=12,
        billing_frequency="monthly",
        account=account(country="DE", region=None),  # 19 % of 901 = 171.19 -> 171
    )
    quote = price_quote(deal, tax_table())
    assert quote.lines[0].line_total == D("1001")
    assert quote.discount == D("100")
    assert quote.taxable_amount == D("901")
    assert quote.tax.amount == D("171")
    assert quote.total == D("1072")
    amounts = [i.amount for i in quote.payment_schedule] + [
        m.amount for m in quote.revenue_schedule
    ]
    assert all(a.as_tuple().exponent == 0 for a in amounts)
    assert [i.amount for i in quote.payment_schedule] == [D("89")] * 11 + [D("93")]
    assert verify_quote(quote) == []


def test_pricing_the_same_deal_twice_gives_the_same_quote():
    deal = make_deal(discount_pct=D("7.5"), term_months=30, billing_frequency="quarterly")
    assert price_quote(deal, tax_table()) == price_quote(deal, tax_table())


@pytest.mark.parametrize(
    ("field", "value"), [("term_months", 0), ("discount_pct", D("100.01")), ("discount_pct", D(-1))]
)
def test_price_quote_refuses_terms_it_cannot_price(field, value):
    with pytest.raises(ValueError, match=field):
        price_quote(make_deal(**{field: value}), tax_table())


# --- payment schedule ----------------------------------------------------------------------


def _periods(quote):
    return [(i.seq, i.period_start_month, i.period_months) for i in quote.payment_schedule]


def test_36_month_annual_bills_three_equal_years():
    quote = price_quote(
        deal_with_total("36000.00", term_months=36, billing_frequency="annual"), tax_table()
    )
    assert _periods(quote) == [(1, 0, 12), (2, 12, 12), (3, 24, 12)]
    assert [i.amount for i in quote.payment_schedule] == [D("12000.00")] * 3
    assert verify_quote(quote) == []


def test_36_month_quarterly_bills_twelve_quarters():
    quote = price_quote(
        deal_with_total("10000.00", term_months=36, billing_frequency="quarterly"), tax_table()
    )
    assert _periods(quote) == [(n + 1, 3 * n, 3) for n in range(12)]
    amounts = [i.amount for i in quote.payment_schedule]
    assert amounts == [D("833.33")] * 11 + [D("833.37")]
    assert sum(amounts) == quote.total
    assert verify_quote(quote) == []


def test_36_month_monthly_puts_rounding_remainder_on_last_installment():
    quote = price_quote(
        deal_with_total("1000.00", term_months=36, billing_frequency="monthly"), tax_table()
    )
    amounts = [i.amount for i in quote.payment_schedule]
    assert len(amounts) == 36
    assert amounts[:-1] == [D("27.78")] * 35
    assert amounts[-1] == D("27.70")
    assert sum(amounts) == D("1000.00")
    assert verify_quote(quote) == []


def test_30_month_annual_gives_12_12_6_with_proportional_amounts():
    quote = price_quote(
        deal_with_total("10000.00", term_months=30, billing_frequency="annual"), tax_table()
    )
    assert _periods(quote) == [(1, 0, 12), (2, 12, 12), (3, 24, 6)]
    assert [i.amount for i in quote.payment_schedule] == [D("4000.00"), D("4000.00"), D("2000.00")]
    assert verify_quote(quote) == []


def test_term_shorter_than_one_period_is_a_single_installment():
    quote = price_quote(
        deal_with_total("500.00", term_months=2, billing_frequency="quarterly"), tax_table()
    )
    assert _periods(quote) == [(1, 0, 2)]
    assert quote.payment_schedule[0].amount == D("500.00")


def test_tiny_total_over_many_months_never_produces_a_negative_installment():
    # 0.60 / 120 = 0.005 would round up to 0.01 each; 119 of those exceed the total.
    quote = price_quote(
        deal_with_total("0.60", term_months=120, billing_frequency="monthly"), tax_table()
    )
    amounts = [i.amount for i in quote.payment_schedule]
    assert all(a >= 0 for a in amounts)
    assert sum(amounts) == D("0.60")
    assert all(m.amount >= 0 for m in quote.revenue_schedule)
    assert sum(m.amount for m in quote.revenue_schedule) == D("0.60")
    assert verify_quote(quote) == []


# --- revenue schedule ----------------------------------------------------------------------


def test_revenue_is_straight_line_monthly_with_remainder_on_last_month():
    quote = price_quote(
        deal_with_total("1000.00", term_months=12, billing_frequency="annual"), tax_table()
    )
    months = quote.revenue_schedule
    assert [m.month_index for m in months] == list(range(12))
    assert [m.amount for m in months] == [D("83.33")] * 11 + [D("83.37")]


def test_revenue_schedule_covers_multi_year_term_even_when_billed_annually():
    quote = price_quote(
        deal_with_total("36000.00", term_months=36, billing_frequency="annual"), tax_table()
    )
    assert len(quote.revenue_schedule) == 36
    assert all(m.amount == D("1000.00") for m in quote.revenue_schedule)


# --- verify_quote ---------------------------------------------------------------------------


def _good_quote():
    deal = make_deal(
        discount_pct=D("12.5"),
        term_months=30,
        billing_frequency="annual",
        account=account(country="FR", region=None),
    )
    quote = price_quote(deal, tax_table())
    assert verify_quote(quote) == []
    return quote


def test_verify_catches_tampered_line_total():
    quote = _good_quote()
    bad_line = quote.lines[0].model_copy(update={"line_total": D("9000.00")})
    problems = verify_quote(quote.model_copy(update={"lines": (bad_line,)}))
    assert any("Line 1" in p and "10000.00" in p for p in problems)
    assert any("Subtotal" in p for p in problems)


def test_verify_catches_tampered_discount():
    quote = _good_quote()
    problems = verify_quote(quote.model_copy(update={"discount": D("1000.00")}))
    assert any(p.startswith("Discount") for p in problems)


def test_verify_catches_tampered_total():
    quote = _good_quote()
    problems = verify_quote(quote.model_copy(update={"total": quote.total + D("0.01")}))
    assert any(p.startswith("Total") for p in problems)
    assert any("Payment schedule adds up to" in p for p in problems)


def test_verify_catches_tampered_tax_amount():
    quote = _good_quote()
    tax = quote.tax.model_copy(update={"amount": D("0.00")})
    problems = verify_quote(quote.model_copy(update={"tax": tax}))
    assert any(p.startswith("Tax") for p in problems)


def test_verify_catches_installments_that_do_not_add_up():
    quote = _good_quote()
    first = quote.payment_schedule[0].model_copy(
        update={"amount": quote.payment_schedule[0].amount + 1}
    )
    schedule = (first, *quote.payment_schedule[1:])
    problems = verify_quote(quote.model_copy(update={"payment_schedule": schedule}))
    assert problems == [
        f"Payment schedule adds up to {format_money(quote.total + 1, 'USD')} but the total is "
        f"{format_money(quote.total, 'USD')}."
    ]


def test_verify_catches_installments_that_do_not_cover_the_term():
    quote = _good_quote()
    problems = verify_quote(
        quote.model_copy(update={"payment_schedule": quote.payment_schedule[:2]})
    )
    assert any("needs 3" in p for p in problems)


def test_verify_catches_revenue_schedule_that_includes_tax():
    quote = _good_quote()
    months = list(quote.revenue_schedule)
    months[-1] = months[-1].model_copy(update={"amount": months[-1].amount + quote.tax.amount})
    problems = verify_quote(quote.model_copy(update={"revenue_schedule": tuple(months)}))
    assert len(problems) == 1
    assert "revenue excludes tax" in problems[0]


def test_verify_catches_missing_revenue_month():
    quote = _good_quote()
    problems = verify_quote(
        quote.model_copy(update={"revenue_schedule": quote.revenue_schedule[:-1]})
    )
    assert any("one per month" in p for p in problems)


def test_verify_catches_a_quote_whose_amounts_are_not_whole_cents():
    quote = _good_quote()
    first = quote.payment_schedule[0].model_copy(
        update={"amount": quote.payment_schedule[0].amount + Decimal("0.001")}
    )
    last = quote.payment_schedule[-1].model_copy(
        update={"amount": quote.payment_schedule[-1].amount - Decimal("0.001")}
    )
    schedule = (first, *quote.payment_schedule[1:-1], last)
    problems = verify_quote(quote.model_copy(update={"payment_schedule": schedule}))
    assert any("minor units" in p for p in problems)
