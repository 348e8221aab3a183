"""What an approver approved: the inputs their role reviews, and a hash of them.

After "request changes" the rep edits the deal and a new quote version is planned. A role is
asked again only when an input it reviews changed; otherwise its approval carries over. The
policy names each role's inputs (``reviews`` in config/approval_policy.toml); this module turns
those names into values and a stable SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from domain.models import DealTerms, Quote

KNOWN_INPUTS = frozenset(
    {
        "total",
        "subtotal",
        "currency",
        "discount_pct",
        "line_items",
        "term_months",
        "billing_frequency",
        "payment_terms_days",
        "custom_terms.legal",
        "custom_terms.security",
        "custom_terms.payment",
        "custom_terms.other",
        "account.name",
        "account.country",
        "account.tax_id",
        "signers",
    }
)


def _value(name: str, terms: DealTerms, quote: Quote) -> Any:
    if name == "total":
        return str(quote.total)
    if name == "subtotal":
        return str(quote.subtotal)
    if name == "currency":
        return quote.currency
    if name == "discount_pct":
        return str(terms.discount_pct.normalize())
    if name == "line_items":
        return [
            [li.sku, li.description, str(li.quantity.normalize()), str(li.unit_price.normalize())]
            for li in terms.line_items
        ]
    if name in ("term_months", "billing_frequency", "payment_terms_days"):
        return getattr(terms, name)
    if name.startswith("custom_terms."):
        kind = name.split(".", 1)[1]
        return [t.text for t in terms.custom_terms if t.kind == kind]
    if name.startswith("account."):
        return getattr(terms.account, name.split(".", 1)[1])
    if name == "signers":
        return [[s.email, s.routing_order] for s in terms.signers]
    raise ValueError(f"unknown approval input {name!r}; known: {sorted(KNOWN_INPUTS)}")


def reviewed_inputs(reviews: Iterable[str], terms: DealTerms, quote: Quote) -> dict[str, Any]:
    """The values a role's approval covers, by input name."""
    return {name: _value(name, terms, quote) for name in sorted(set(reviews))}


def inputs_sha256(reviews: Iterable[str], terms: DealTerms, quote: Quote) -> str:
    canonical = json.dumps(reviewed_inputs(reviews, terms, quote), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
