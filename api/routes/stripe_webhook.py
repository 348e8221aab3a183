"""``POST /v1/webhooks/stripe``: Stripe events, verified with the ``Stripe-Signature`` header.

The signature is checked by ``stripe.Webhook.construct_event`` against the raw body and the
webhook secret (and refused when older than the SDK's five-minute tolerance): a bad, stale or
missing one is 400. ``invoice.paid`` becomes the deal closure's ``invoice_paid`` signal; the
deal is found by the invoice id our closing recorded, or by its subscription (a subscription's
later invoices). Every other answer is 2xx, because Stripe redelivers anything else for days:
an invoice we did not create is ``matched: false``, other event types are ignored. Only when
Temporal cannot take the signal now is it 503, so Stripe delivers it again later.

Stripe may deliver an event more than once; the workflow ignores an invoice it already has.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import stripe
from fastapi import APIRouter, Request
from temporalio.service import RPCError, RPCStatusCode

from api.closure import signal_invoice_paid
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError
from api.unavailable import TemporalUnavailable
from db import closing as closing_db
from dealflow.ids import deal_closure_workflow_id
from domain.billing import from_minor_units
from messages.closure import InvoicePaid

log = logging.getLogger("dealflow.api")

router = APIRouter(tags=["stripe webhooks"])

# Room for a timestamp and several v1/v0 signatures (one per active secret while rotating).
MAX_SIGNATURE_HEADER = 2048


@router.post("/v1/webhooks/stripe")
async def stripe_webhook(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> dict[str, Any]:
    """A Stripe event: ``invoice.paid`` signals the deal's closure; the rest is acknowledged."""
    payload = await request.body()
    header = request.headers.get("stripe-signature")
    # The SDK compares signatures as str: a non-ASCII one raises TypeError (a 500) instead of
    # failing to verify. Stripe's own header is short ASCII (t=..., v1=<hex>, ...).
    if header is not None and not (header.isascii() and len(header) <= MAX_SIGNATURE_HEADER):
        raise ApiError(400, "invalid_signature", "The Stripe-Signature header is malformed.")
    try:
        event = stripe.Webhook.construct_event(
            payload, header, settings.secret("stripe_webhook_secret")
        )
    except stripe.SignatureVerificationError as err:
        raise ApiError(
            400, "invalid_signature", err.user_message or "The signature is not valid."
        ) from None
    # Signed, but not JSON (or not UTF-8, or not a v1 event), or nested past the parser.
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_payload", "The body is not a Stripe event.") from None

    if event.type != "invoice.paid":
        return {"received": True, "ignored": True}
    try:
        invoice = event.data.object.to_dict()
        if not isinstance(invoice.get("id"), str):
            raise TypeError("invoice without an id")
    except (AttributeError, KeyError, TypeError):
        raise ApiError(400, "invalid_payload", "The event carries no invoice.") from None
    deal_id = await closing_db.find_deal_by_invoice(session, invoice_id=invoice["id"])
    subscription_id = _subscription_of(invoice)
    if deal_id is None and subscription_id:
        deal_id = await closing_db.find_deal_by_subscription(
            session, subscription_id=subscription_id
        )
    if deal_id is None:
        log.info("stripe invoice.paid for unknown invoice %s (event %s)", invoice["id"], event.id)
        return {"received": True, "matched": False}

    paid = InvoicePaid(
        invoice_id=invoice["id"],
        paid_at=_paid_at(invoice, event.created),
        amount_paid=(
            from_minor_units(invoice["amount_paid"], invoice["currency"])
            if invoice.get("amount_paid") is not None and invoice.get("currency")
            else None
        ),
    )
    workflow_id = deal_closure_workflow_id(deal_id)
    try:
        await signal_invoice_paid(temporal, deal_id, paid)
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            # The closure has finished: nothing waits for this payment any more.
            log.info("invoice %s paid; %s is not running: %s", paid.invoice_id, workflow_id, err)
            return {"received": True, "matched": True, "signalled": False}
        log.warning("could not signal %s: %s", workflow_id, err)
        # 503 with Retry-After (api/unavailable.py), so Stripe delivers the event again later.
        raise TemporalUnavailable(str(err)) from None
    log.info("invoice %s paid: signalled %s", paid.invoice_id, workflow_id)
    return {"received": True, "matched": True, "signalled": True}


def _subscription_of(invoice: dict[str, Any]) -> str | None:
    """The invoice's subscription: ``parent.subscription_details`` (API 2025+) or the old field."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription")
    if isinstance(subscription, str):
        return subscription
    return subscription.get("id") if subscription else None


def _paid_at(invoice: dict[str, Any], event_created: int) -> datetime:
    transitions = invoice.get("status_transitions") or {}
    moment = transitions.get("paid_at") or event_created
    return datetime.fromtimestamp(moment, UTC)
