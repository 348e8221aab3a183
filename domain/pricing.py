"""Price a deal into a quote, and re-check a quote's arithmetic independently.

``price_quote`` is pure and deterministic: the deal-closure workflow calls it directly, and the
same deal and tax table always give the same quote, to the cent. ``verify_quote`` recomputes
every sum from the quote's own figures so a quote that was edited, corrupted or produced by a
buggy version is caught before it is sent to a customer or billed.

Rounding: every money figure is quantized to the currency's minor unit (ROUND_HALF_UP). Where a
total is split (payment installments, revenue months), each part is rounded and the rounding
remainder goes on the last part, so the parts always add up to the total exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from domain.models import (
    BillingFrequency,
    DealTerms,
    Installment,
    PricedLine,
    Quote,
    RevenueMonth,
)
from domain.money import format_money, quantize, quantize_down
from domain.tax import TaxTable, resolve_tax

PERIOD_MONTHS: dict[str, int] = {"annual": 12, "quarterly": 3, "monthly": 1}
"""Months billed by one installment, per billing frequency."""


def price_quote(deal: DealTerms, tax_table: TaxTable) -> Quote:
    """Price ``deal``: lines, discount, tax, total, payment schedule and revenue schedule.

    Expects a deal that passed ``validate_deal``; raises ValueError for terms that cannot be
    priced at all (term under one month, discount outside 0..100) rather than returning nonsense.
    """
    if deal.term_months < 1:
        raise ValueError(f"term_months must be at least 1, got {deal.term_months}")
    if not (Decimal(0) <= deal.discount_pct <= 100):
        raise ValueError(f"discount_pct must be between 0 and 100, got {deal.discount_pct}")
    cur = deal.currency

    lines = tuple(
        PricedLine(
            sku=item.sku,
            description=item.description,
            quantity=item.quantity,
            unit_price=item.unit_price,
            line_total=quantize(item.quantity * item.unit_price, cur),
        )
        for item in deal.line_items
    )
    subtotal = quantize(sum((line.line_total for line in lines), Decimal(0)), cur)
    discount = quantize(subtotal * deal.discount_pct / 100, cur)
    taxable = subtotal - discount
    tax = resolve_tax(deal.account, taxable, cur, tax_table)
    total = taxable + tax.amount

    return Quote(
        currency=cur,
        lines=lines,
        subtotal=subtotal,
        discount_pct=deal.discount_pct,
        discount=discount,
        taxable_amount=taxable,
        tax=tax,
        total=total,
        term_months=deal.term_months,
        billing_frequency=deal.billing_frequency,
        payment_schedule=payment_schedule(total, cur, deal.term_months, deal.billing_frequency),
        revenue_schedule=revenue_schedule(taxable, cur, deal.term_months),
    )


def billing_periods(term_months: int, frequency: BillingFrequency) -> list[tuple[int, int]]:
    """(start month, length) of each billing period; the last one is shorter if the term ends.

    A 30-month term billed annually gives (0, 12), (12, 12), (24, 6).
    """
    step = PERIOD_MONTHS[frequency]
    return [(start, min(step, term_months - start)) for start in range(0, term_months, step)]


def _split(
    total: Decimal, currency: str, weights: list[int], rounder: Callable[[Decimal, str], Decimal]
) -> list[Decimal]:
    whole = sum(weights)
    parts = [rounder(total * w / whole, currency) for w in weights[:-1]]
    parts.append(total - sum(parts, Decimal(0)))
    return parts


def split_proportionally(total: Decimal, currency: str, weights: list[int]) -> list[Decimal]:
    """Split ``total`` in proportion to ``weights``; the rounding remainder goes on the last part.

    Parts are rounded half-up. If that would leave the last part negative (only possible for
    tiny totals over many parts, e.g. 0.60 over 120 months), the earlier parts are truncated
    instead, which keeps every part non-negative and the sum exact.
    """
    parts = _split(total, currency, weights, quantize)
    if total >= 0 and parts[-1] < 0:
        parts = _split(total, currency, weights, quantize_down)
    return parts


def payment_schedule(
    total: Decimal, currency: str, term_months: int, frequency: BillingFrequency
) -> tuple[Installment, ...]:
    """Installments billed in advance per period, each proportional to its months of service."""
    periods = billing_periods(term_months, frequency)
    amounts = split_proportionally(total, currency, [months for _, months in periods])
    return tuple(
        Installment(seq=i + 1, period_start_month=start, period_months=months, amount=amount)
        for i, ((start, months), amount) in enumerate(zip(periods, amounts, strict=True))
    )


def revenue_schedule(
    taxable_amount: Decimal, currency: str, term_months: int
) -> tuple[RevenueMonth, ...]:
    """Straight-line monthly revenue over the term; tax is not revenue, so it is excluded."""
    amounts = split_proportionally(taxable_amount, currency, [1] * term_months)
    return tuple(RevenueMonth(month_index=i, amount=a) for i, a in enumerate(amounts))


def verify_quote(quote: Quote) -> list[str]:
    """Recompute every figure of ``quote`` from its inputs; return the problems, [] when right.

    Independent of ``price_quote``'s code path on purpose: sums are rebuilt from the quote's own
    lines and rates, so a tampered or stale quote shows up as a readable list of mismatches.
    """
    cur = quote.currency
    problems: list[str] = []

    def money(x: Decimal) -> str:
        return f"{x} {cur}"

    def check(what: str, actual: Decimal, expected: Decimal) -> None:
        if actual != expected:
            problems.append(f"{what} is {money(actual)} but should be {money(expected)}.")

    for i, line in enumerate(quote.lines, start=1):
        check(
            f"Line {i} ({line.sku}) total [{line.quantity} x {line.unit_price}]",
            line.line_total,
            quantize(line.quantity * line.unit_price, cur),
        )
    check("Subtotal", quote.subtotal, sum((ln.line_total for ln in quote.lines), Decimal(0)))
    if not (Decimal(0) <= quote.discount_pct <= 100):
        problems.append(f"Discount {quote.discount_pct}% is outside 0..100%.")
    check(
        f"Discount ({quote.discount_pct}% of {money(quote.subtotal)})",
        quote.discount,
        quantize(quote.subtotal * quote.discount_pct / 100, cur),
    )
    check(
        "Taxable amount (subtotal - discount)",
        quote.taxable_amount,
        quote.subtotal - quote.discount,
    )
    check(
        f"Tax ({quote.tax.rate_pct}% of {money(quote.taxable_amount)})",
        quote.tax.amount,
        quantize(quote.taxable_amount * quote.tax.rate_pct / 100, cur),
    )
    if quote.tax.reverse_charge and quote.tax.amount != 0:
        problems.append(
            f"Tax is reverse charged but the tax amount is {money(quote.tax.amount)}, not 0."
        )
    check("Total (taxable amount + tax)", quote.total, quote.taxable_amount + quote.tax.amount)

    problems.extend(_verify_payment_schedule(quote))
    problems.extend(_verify_revenue_schedule(quote))
    return problems


def _verify_payment_schedule(quote: Quote) -> list[str]:
    cur = quote.currency
    problems: list[str] = []
    schedule = quote.payment_schedule
    if quote.term_months < 1:
        return [f"Term of {quote.term_months} months is not a valid term."]
    expected = billing_periods(quote.term_months, quote.billing_frequency)
    actual = [(inst.period_start_month, inst.period_months) for inst in schedule]
    if [inst.seq for inst in schedule] != list(range(1, len(schedule) + 1)):
        problems.append("Payment installments are not numbered 1, 2, 3, ... in order.")
    if len(schedule) != len(expected):
        problems.append(
            f"Payment schedule has {len(schedule)} installments; a {quote.term_months}-month "
            f"term billed {quote.billing_frequency} needs {len(expected)}."
        )
    elif actual != expected:
        problems.append(
            f"Payment periods {actual} do not cover the {quote.term_months}-month term as "
            f"billed {quote.billing_frequency}: expected {expected}."
        )
    for inst in schedule:
        if inst.amount < 0:
            problems.append(
                f"Installment {inst.seq} is negative ({format_money(inst.amount, cur)})."
            )
        if inst.amount != quantize(inst.amount, cur):
            problems.append(
                f"Installment {inst.seq} ({inst.amount}) is not in whole {cur} minor units."
            )
    paid = sum((inst.amount for inst in schedule), Decimal(0))
    if paid != quote.total:
        problems.append(
            f"Payment schedule adds up to {format_money(paid, cur)} but the total is "
            f"{format_money(quote.total, cur)}."
        )
    return problems


def _verify_revenue_schedule(quote: Quote) -> list[str]:
    cur = quote.currency
    problems: list[str] = []
    months = quote.revenue_schedule
    if [m.month_index for m in months] != list(range(quote.term_months)):
        problems.append(
            f"Revenue schedule has months {[m.month_index for m in months][:5]}...; expected one "
            f"per month 0..{quote.term_months - 1} of the {quote.term_months}-month term."
        )
    for m in months:
        if m.amount < 0:
            problems.append(
                f"Revenue for month {m.month_index} is negative ({format_money(m.amount, cur)})."
            )
    recognised = sum((m.amount for m in months), Decimal(0))
    if recognised != quote.taxable_amount:
        problems.append(
            f"Revenue schedule adds up to {format_money(recognised, cur)} but the taxable amount "
            f"(revenue excludes tax) is {format_money(quote.taxable_amount, cur)}."
        )
    return problems
