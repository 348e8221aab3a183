"""Business checks a deal must pass before a closure can price it.

Messages are written for the sales rep who has to fix the deal: what is wrong and why it
matters. Pure: the API calls it to refuse bad input with a 422, and the workflow calls it again
before pricing, so a deal edited in between is checked too.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from decimal import Decimal

from dealflow.limits import MAX_TERM_MONTHS
from domain.models import DealTerms, Problem
from domain.regions import is_eea, vat_prefix

# A business rule, stricter than the edge's bound (limits.MAX_PAYMENT_TERMS_DAYS): a deal with
# longer terms can be saved, and the closure asks for them to be shortened.
MAX_PAYMENT_TERMS_DAYS = 180

_CURRENCY = re.compile(r"[A-Z]{3}")
_COUNTRY = re.compile(r"[A-Z]{2}")


def validate_deal(
    deal: DealTerms, *, known_currencies: Collection[str] | None = None
) -> list[Problem]:
    """Every problem that stops ``deal`` from being priced and sent; empty when it is fine.

    ``known_currencies`` (e.g. ``approval_policy.known_currencies(policy)``) additionally
    refuses a currency the approval policy cannot convert, which would otherwise fail later.
    """
    problems: list[Problem] = []

    def add(field: str, message: str) -> None:
        problems.append(Problem(field=field, message=message))

    # Line items
    if not deal.line_items:
        add("line_items", "Add at least one line item: a quote cannot be priced without one.")
    for i, item in enumerate(deal.line_items):
        if item.quantity <= 0:
            add(
                f"line_items[{i}].quantity",
                f"Quantity of {item.sku or 'line ' + str(i + 1)} must be more than 0 "
                f"(it is {item.quantity}); remove the line instead of setting it to 0.",
            )
        if item.unit_price < 0:
            add(
                f"line_items[{i}].unit_price",
                f"Unit price of {item.sku or 'line ' + str(i + 1)} cannot be negative "
                f"(it is {item.unit_price}); use the deal discount to lower the price.",
            )

    # Commercial terms
    if not (1 <= deal.term_months <= MAX_TERM_MONTHS):
        add(
            "term_months",
            f"Term must be between 1 and {MAX_TERM_MONTHS} months (it is {deal.term_months}).",
        )
    if not (Decimal(0) <= deal.discount_pct <= 100):
        add("discount_pct", f"Discount must be between 0 and 100% (it is {deal.discount_pct}%).")
    if not (0 <= deal.payment_terms_days <= MAX_PAYMENT_TERMS_DAYS):
        add(
            "payment_terms_days",
            f"Payment terms must be between 0 and {MAX_PAYMENT_TERMS_DAYS} days "
            f"(they are {deal.payment_terms_days}).",
        )
    if not _CURRENCY.fullmatch(deal.currency):
        add(
            "currency",
            f"Currency {deal.currency!r} is not a currency code: use three capital letters, "
            'e.g. "USD" or "EUR".',
        )
    elif known_currencies is not None and deal.currency not in known_currencies:
        add(
            "currency",
            f"Deals in {deal.currency} cannot be closed yet: the approval policy has no exchange "
            f"rate for it. Use one of {', '.join(sorted(known_currencies))}, or ask finance.",
        )

    # Signers
    if not deal.signers:
        add("signers", "Add at least one signer: the contract cannot be sent without one.")
    seen: dict[str, int] = {}
    for i, signer in enumerate(deal.signers):
        if signer.routing_order < 1:
            add(
                f"signers[{i}].routing_order",
                f"Signing order of {signer.name} must be 1 or more (it is {signer.routing_order}).",
            )
        email = signer.email.strip().lower()
        if email in seen:
            add(
                f"signers[{i}].email",
                f"{signer.email} is listed as a signer twice (signers {seen[email] + 1} and "
                f"{i + 1}): each signer needs their own email address.",
            )
        else:
            seen[email] = i

    # Account: tax depends on where the customer is
    account = deal.account
    if not _COUNTRY.fullmatch(account.country):
        add(
            "account.country",
            f"Country {account.country!r} is not a country code: use the two capital letters "
            'of ISO 3166, e.g. "US", "DE".',
        )
    elif account.country in ("US", "CA") and not (account.region or "").strip():
        what = "state" if account.country == "US" else "province"
        example = '"NY"' if account.country == "US" else '"ON"'
        add(
            "account.region",
            f"Add the {what} (e.g. {example}) for this {account.country} account: "
            "sales tax depends on it.",
        )
    elif is_eea(account.country) and account.tax_id and account.tax_id.strip():
        prefix = vat_prefix(account.country)
        if not account.tax_id.strip().upper().startswith(prefix):
            add(
                "account.tax_id",
                f"VAT ID {account.tax_id} does not start with {prefix}, the prefix for "
                f"{account.country}: check the number, since it decides whether VAT is "
                "reverse charged.",
            )
    return problems
