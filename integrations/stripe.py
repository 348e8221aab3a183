"""Stripe: the client the closing activities bill through (stripe-mock in the sandbox), and how
our data maps onto Stripe's (customer parameters, tax id types, which errors are refusals)."""

from __future__ import annotations

from typing import Any

import stripe

from dealflow.settings import Settings
from domain.billing import BillingPlan
from domain.regions import is_eu
from messages.closure import ClosingInput


def build_stripe_client(
    settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> stripe.StripeClient:
    """The Stripe client the worker uses: stripe-mock in the sandbox, api.stripe.com in production.

    httpx underneath, so the activities' ``*_async`` calls do not block the event loop.
    """
    return stripe.StripeClient(
        settings.secret("stripe_api_key"),
        base_addresses={"api": settings.stripe_api_base},
        http_client=http_client or stripe.HTTPXClient(),
    )


# Stripe's tax id type for an account's tax id, by the account's country. A country missing
# here keeps its tax id in the customer's metadata (and on our quote) rather than failing.
_TAX_ID_TYPES = {
    "GB": "gb_vat",
    "CH": "ch_vat",
    "LI": "li_vat",
    "NO": "no_vat",
    "IS": "is_vat",
    "US": "us_ein",
    "CA": "ca_bn",
    "AU": "au_abn",
    "NZ": "nz_gst",
    "IN": "in_gst",
    "SG": "sg_gst",
    "JP": "jp_trn",
}


def stripe_tax_id_type(country: str) -> str | None:
    """Stripe's tax id type for a country's tax ids (None: keep it in metadata)."""
    country = country.upper()
    return "eu_vat" if is_eu(country) else _TAX_ID_TYPES.get(country)


def is_rejection(err: stripe.StripeError) -> bool:
    """A refusal no retry changes: bad parameters, a declined card, a bad key.

    Stripe answers an idempotency key reused with other parameters with 400 (a refusal); a
    request racing another with the same key gets 409 (an APIError: retried).
    """
    return isinstance(
        err,
        stripe.InvalidRequestError
        | stripe.CardError
        | stripe.IdempotencyError
        | stripe.AuthenticationError
        | stripe.PermissionError,
    )


def customer_params(
    input: ClosingInput, plan: BillingPlan, metadata: dict[str, str]
) -> dict[str, Any]:
    """The Stripe customer of a won deal: its account, first signer, tax note and tax id."""
    account = input.terms.account
    # Invoices go to the first signer: the person who signed for the customer.
    contact = min(input.terms.signers, key=lambda s: s.routing_order, default=None)
    metadata = {**metadata, "account_domain": account.domain}
    address = {"country": account.country}
    if account.region:
        address["state"] = account.region
    params: dict[str, Any] = {
        "name": account.name,
        "address": address,
        "metadata": metadata,
    }
    if contact is not None:
        params["email"] = contact.email
    if plan.tax_note:
        # On every invoice of this customer: the reverse-charge wording and the like.
        params["invoice_settings"] = {"footer": plan.tax_note}
    if input.quote.tax.reverse_charge:
        params["tax_exempt"] = "reverse"
    if account.tax_id:
        tax_type = stripe_tax_id_type(account.country)
        if tax_type is None:
            metadata["tax_id"] = account.tax_id
        else:
            params["tax_id_data"] = [{"type": tax_type, "value": account.tax_id}]
    return params


def subscription_ids(schedule: stripe.SubscriptionSchedule) -> dict[str, Any]:
    """The subscription (and its latest invoice) a subscription schedule created, if any."""
    subscription = schedule.to_dict().get("subscription")
    if subscription is None:
        return {}
    if isinstance(subscription, str):
        return {"subscription_id": subscription}
    invoice = subscription.get("latest_invoice")
    invoice_id = invoice if isinstance(invoice, str) or invoice is None else invoice.get("id")
    return {"subscription_id": subscription.get("id"), "invoice_id": invoice_id}
