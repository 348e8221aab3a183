"""Closed-won activities: the CRM, Stripe billing, the revenue schedule and the commission.

Each activity walks its steps in order and, before every outside call, looks in
``closing_steps`` for the step already done: a retry (after a crash, a timeout, or ops fixing
data after ``needs_attention``) redoes nothing. The moment between an outside call and its row
is covered by the call itself: every Stripe request carries the Idempotency-Key
``<deal id>.v<quote version>.<step>``, and the CRM note carries its key in its body and is
looked up on the deal before one is created.

Failures no retry can fix raise ``ApplicationError(type=STRIPE_REJECTED | CRM_REJECTED,
non_retryable=True)`` with the other side's message, so the workflow can wait for a person.
A rejected step is recorded with a count; its next attempt uses a fresh idempotency key
(``....<step>.retry<n>``), because Stripe may have saved the refusal under the old one.
Connection errors, timeouts, 429 and 5xx propagate as they are: the retry policy retries them.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import closing as closing_db
from db.audit import append_audit
from db.closing_models import ClosingStep
from dealflow.faults import CrashPoints
from dealflow.settings import Settings
from domain.billing import (
    BillingPlan,
    Charge,
    billing_plan,
    commission,
    load_commission_policy,
    revenue_rows,
    to_minor_units,
)
from domain.money import format_money
from integrations.crm import CrmClient, CrmDeal, CrmRejected
from integrations.stripe import customer_params, is_rejection, subscription_ids
from messages.closure import BillingResult, ClosingInput, CrmResult, InvoicePaid, RevenueResult

log = logging.getLogger(__name__)

# ApplicationError types the workflow matches on.
STRIPE_REJECTED = "StripeRejected"
CRM_REJECTED = "CrmRejected"


class ClosingActivities:
    """Built once in worker.py with the CRM and Stripe clients; tests build it the same way."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        crm: CrmClient,
        stripe_client: stripe.StripeClient,
        crash_points: CrashPoints,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._crm = crm
        self._stripe = stripe_client
        self._crash = crash_points

    # --- CRM ----------------------------------------------------------------------------------

    @activity.defn
    async def mark_crm_closed_won(self, input: ClosingInput) -> CrmResult:
        """The CRM deal upserted as closed-won, then one note linking the signed documents."""
        self._crash.failures.check("mark_crm_closed_won", input.deal_id)
        steps = await self._steps(input)
        deal_step = steps.get("crm.deal")
        if _done(deal_step):
            crm_deal_id = str(deal_step.external_ref)
        else:
            deal = CrmDeal(
                deal_id=input.deal_id,
                crm_id=input.external_id,  # the rep's CRM deal, updated rather than duplicated
                name=input.terms.name,
                stage="closed_won",
                amount=input.quote.taxable_amount,
                currency=input.quote.currency,
                close_date=input.close_date,
            )
            crm_deal_id = await self._crm_step(input, "crm.deal", self._crm.upsert_deal(deal))
            await self._record(input, "crm.deal", crm_deal_id, {"stage": "closed_won"})

        note_step = steps.get("crm.note")
        if _done(note_step):
            note_id = str(note_step.external_ref)
        else:
            key = _key(input, "crm.note")
            note_id = await self._crm_step(
                input,
                "crm.note",
                self._crm.add_note(
                    crm_deal_id,
                    key=key,
                    body_html=_note_body(input, key),
                    at=dt.datetime.now(dt.UTC),
                ),
            )
            # Before the row: a crash here proves the retry finds the note in the CRM itself.
            self._crash.checkpoint("closing.after_crm")
            await self._record(
                input,
                "crm.note",
                note_id,
                {"documents": [d.id for d in input.signed_documents]},
                audit=("crm.closed_won", {"crm_deal_id": crm_deal_id, "note_id": note_id}),
            )
        return CrmResult(crm_deal_id=crm_deal_id, note_id=note_id, status="closed_won")

    async def _crm_step(self, input: ClosingInput, step: str, call: Awaitable[str]) -> str:
        try:
            return await call
        except CrmRejected as err:
            await self._reject(input, step, str(err))
            raise ApplicationError(
                f"the CRM refused {step}: {err}", type=CRM_REJECTED, non_retryable=True
            ) from err

    # --- Stripe -------------------------------------------------------------------------------

    @activity.defn
    async def create_stripe_billing(self, input: ClosingInput) -> BillingResult:
        """Customer, then one invoice sent (one installment) or a subscription (several)."""
        self._crash.failures.check("create_stripe_billing", input.deal_id)
        plan = billing_plan(input.quote)
        steps = await self._steps(input)
        customer_id, _ = await self._stripe_step(
            input,
            steps,
            "stripe.customer",
            lambda key: self._stripe.v1.customers.create_async(
                params=customer_params(input, plan, _metadata(input)),
                options={"idempotency_key": key},
            ),
        )
        self._crash.checkpoint("closing.after_customer")
        if plan.mode == "invoice":
            return await self._send_invoice(input, plan, steps, customer_id)
        return await self._subscribe(input, plan, steps, customer_id)

    async def _send_invoice(
        self,
        input: ClosingInput,
        plan: BillingPlan,
        steps: dict[str, ClosingStep],
        customer_id: str,
    ) -> BillingResult:
        terms, cur = input.terms, input.quote.currency
        meta = _metadata(input)
        # The invoice first, then items attached to it by id: pending items of the customer
        # (another deal's, say) can never slip onto this invoice.
        invoice_id, _ = await self._stripe_step(
            input,
            steps,
            closing_db.INVOICE_STEP,
            lambda key: self._stripe.v1.invoices.create_async(
                params={
                    "customer": customer_id,
                    "collection_method": "send_invoice",
                    "days_until_due": terms.payment_terms_days,
                    "currency": cur.lower(),
                    "auto_advance": False,
                    "pending_invoice_items_behavior": "exclude",
                    "description": f"{terms.name}, quote version {input.quote_version}",
                    "metadata": meta,
                },
                options={"idempotency_key": key},
            ),
        )
        for charge in plan.phases[0].charges:
            await self._stripe_step(
                input,
                steps,
                f"stripe.invoice_item.{charge.key}",
                lambda key, charge=charge: self._stripe.v1.invoice_items.create_async(
                    params={
                        "customer": customer_id,
                        "invoice": invoice_id,
                        "currency": cur.lower(),
                        "amount": to_minor_units(charge.amount, cur),
                        "description": charge.description,
                        "metadata": {**meta, "charge": charge.key},
                    },
                    options={"idempotency_key": key},
                ),
            )
        _, finalized = await self._stripe_step(
            input,
            steps,
            "stripe.invoice.finalize",
            lambda key: self._stripe.v1.invoices.finalize_invoice_async(
                invoice_id, params={"auto_advance": False}, options={"idempotency_key": key}
            ),
            # Stripe sets due_date = finalisation + days_until_due; computed here as Stripe
            # does, so the sandbox (stripe-mock answers fixtures) gives real dates too.
            detail=lambda _: {"due_date": _due(terms.payment_terms_days).isoformat()},
        )
        await self._stripe_step(
            input,
            steps,
            "stripe.invoice.send",
            lambda key: self._stripe.v1.invoices.send_invoice_async(
                invoice_id, options={"idempotency_key": key}
            ),
            audit=("billing.invoice_sent", {"invoice_id": invoice_id}),
        )
        return BillingResult(
            stripe_customer_id=customer_id,
            stripe_invoice_id=invoice_id,
            stripe_subscription_id=None,
            status="invoice_sent",
            due_date=dt.date.fromisoformat(finalized["due_date"]),
            amount_due=plan.first_amount,
        )

    async def _subscribe(
        self,
        input: ClosingInput,
        plan: BillingPlan,
        steps: dict[str, ClosingStep],
        customer_id: str,
    ) -> BillingResult:
        """A subscription schedule: one phase per run of equal installments, then cancel.

        A schedule (not a bare subscription with cancel_at) because it bills exactly the
        installments of the payment schedule, the shorter or rounded last one included, and
        ends with the term without a prorated final period.
        """
        cur = input.quote.currency
        meta = _metadata(input)
        products: dict[str, str] = {}
        for charge in _charges_by_key(plan):
            products[charge.key], _ = await self._stripe_step(
                input,
                steps,
                f"stripe.product.{charge.key}",
                lambda key, charge=charge: self._stripe.v1.products.create_async(
                    params={
                        "name": charge.description.split(":")[0][:250],
                        "metadata": {**meta, "charge": charge.key},
                    },
                    options={"idempotency_key": key},
                ),
            )
        phases = []
        for phase in plan.phases:
            interval, count = phase.interval
            phases.append(
                {
                    "items": [
                        {
                            "price_data": {
                                "currency": cur.lower(),
                                "product": products[c.key],
                                "unit_amount": to_minor_units(c.amount, cur),
                                "recurring": {"interval": interval, "interval_count": count},
                            },
                            "quantity": 1,
                        }
                        for c in phase.charges
                    ],
                    "duration": {
                        "interval": interval,
                        "interval_count": count * phase.installments,
                    },
                    "metadata": meta,
                }
            )
        days = input.terms.payment_terms_days
        schedule_id, detail = await self._stripe_step(
            input,
            steps,
            "stripe.subscription_schedule",
            lambda key: self._stripe.v1.subscription_schedules.create_async(
                params={
                    "customer": customer_id,
                    "start_date": "now",
                    "end_behavior": "cancel",
                    "default_settings": {
                        "collection_method": "send_invoice",
                        "invoice_settings": {"days_until_due": days},
                    },
                    "phases": phases,
                    "metadata": meta,
                    "expand": ["subscription.latest_invoice"],
                },
                options={"idempotency_key": key},
            ),
            detail=lambda schedule: {
                **subscription_ids(schedule),
                # The first invoice is created now and finalised by Stripe within the hour.
                "due_date": _due(days).isoformat(),
            },
        )
        subscription_id, invoice_id = detail.get("subscription_id"), detail.get("invoice_id")
        # Rows the webhook matches invoices by (the first one, and later ones by subscription).
        if subscription_id and not _done(steps.get(closing_db.SUBSCRIPTION_STEP)):
            await self._record(
                input,
                closing_db.SUBSCRIPTION_STEP,
                subscription_id,
                {"schedule_id": schedule_id},
                audit=(
                    "billing.subscription_created",
                    {"schedule_id": schedule_id, "subscription_id": subscription_id},
                ),
            )
        if invoice_id and not _done(steps.get(closing_db.INVOICE_STEP)):
            await self._record(
                input, closing_db.INVOICE_STEP, invoice_id, {"subscription_id": subscription_id}
            )
        return BillingResult(
            stripe_customer_id=customer_id,
            stripe_invoice_id=invoice_id,
            stripe_subscription_id=subscription_id,
            status="subscription_created",
            due_date=dt.date.fromisoformat(detail["due_date"]),
            amount_due=plan.first_amount,
        )

    async def _stripe_step(
        self,
        input: ClosingInput,
        steps: dict[str, ClosingStep],
        step: str,
        call: Callable[[str], Awaitable[Any]],
        *,
        detail: Callable[[Any], dict[str, Any]] | None = None,
        audit: tuple[str, dict[str, Any]] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """Do one Stripe call unless its step is done; return (object id, recorded detail)."""
        row = steps.get(step)
        if _done(row):
            return str(row.external_ref), dict(row.detail or {})
        rejections = int((row.detail or {}).get("rejections", 0)) if row is not None else 0
        key = _key(input, step) + (f".retry{rejections}" if rejections else "")
        try:
            obj = await call(key)
        except stripe.StripeError as err:
            if not is_rejection(err):
                raise
            message = err.user_message or str(err)
            await self._reject(input, step, message)
            raise ApplicationError(
                f"Stripe refused {step}: {message}",
                {"step": step, "code": err.code, "http_status": err.http_status},
                type=STRIPE_REJECTED,
                non_retryable=True,
            ) from err
        recorded = detail(obj) if detail else {}
        await self._record(input, step, obj.id, recorded, audit=audit)
        return obj.id, recorded

    # --- revenue and commission -------------------------------------------------------------

    @activity.defn
    async def record_payment(self, paid: InvoicePaid, deal_id: str) -> int:
        """The invoice was paid: a commission payable on payment becomes payable (once)."""
        self._crash.failures.check("record_payment", deal_id)
        async with self._sessions.begin() as session:
            changed = await closing_db.mark_commission_paid(
                session, deal_id=deal_id, paid_at=paid.paid_at
            )
            await append_audit(
                session,
                deal_id=deal_id,
                actor="stripe",
                channel="stripe",
                event="billing.paid",
                detail={"invoice_id": paid.invoice_id, "commissions_payable": changed},
                at=paid.paid_at,
                idempotency_key=f"{deal_id}/paid/{paid.invoice_id}",
            )
        return changed

    @activity.defn
    async def record_revenue_and_commission(self, input: ClosingInput) -> RevenueResult:
        """Monthly straight-line revenue rows from the close date and the rep's commission."""
        self._crash.failures.check("record_revenue_and_commission", input.deal_id)
        policy = load_commission_policy(self._settings.commission_policy_path)
        quote = input.quote
        rows = revenue_rows(quote, input.close_date)
        async with self._sessions.begin() as session:
            written = await closing_db.insert_revenue_rows(
                session,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                currency=quote.currency,
                rows=rows,
            )
            stored = await closing_db.insert_commission(
                session,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                rep_email=input.owner_email,
                basis_amount=quote.taxable_amount,
                rate_pct=policy.rate_pct,
                amount=commission(quote, policy),
                currency=quote.currency,
                payable_on=policy.payable_on,
                payable_at=(
                    dt.datetime.combine(input.close_date, dt.time(), dt.UTC)
                    if policy.payable_on == "close"
                    else None
                ),
                policy_version=policy.version,
            )
            await append_audit(
                session,
                deal_id=input.deal_id,
                actor="workflow",
                channel="workflow",
                event="closing.revenue_recorded",
                detail={
                    "months": len(rows),
                    "revenue": str(quote.taxable_amount),
                    "commission": str(stored.amount),
                    "commission_payable_on": stored.payable_on,
                },
                idempotency_key=_key(input, "revenue"),
            )
        log.info("revenue rows for %s v%s: %d new", input.deal_id, input.quote_version, written)
        return RevenueResult(
            rows=len(rows),
            commission_amount=stored.amount,
            commission_payable_on=stored.payable_on,
        )

    # --- the step ledger ----------------------------------------------------------------------

    async def _steps(self, input: ClosingInput) -> dict[str, ClosingStep]:
        async with self._sessions() as session:
            return await closing_db.get_steps(
                session, deal_id=input.deal_id, quote_version=input.quote_version
            )

    async def _record(
        self,
        input: ClosingInput,
        step: str,
        external_ref: str,
        detail: dict[str, Any],
        *,
        audit: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        async with self._sessions.begin() as session:
            await closing_db.record_step_done(
                session,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                step=step,
                external_ref=external_ref,
                detail=detail,
            )
            if audit is not None:
                event, audit_detail = audit
                await append_audit(
                    session,
                    deal_id=input.deal_id,
                    actor="workflow",
                    channel="workflow",
                    event=event,
                    detail=audit_detail,
                    idempotency_key=_key(input, event),
                )

    async def _reject(self, input: ClosingInput, step: str, reason: str) -> None:
        log.warning("%s v%s: %s refused: %s", input.deal_id, input.quote_version, step, reason)
        async with self._sessions.begin() as session:
            await closing_db.record_step_rejected(
                session,
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                step=step,
                reason=reason[:2000],
            )


def _done(row: ClosingStep | None) -> bool:
    return row is not None and row.status == "done" and row.external_ref is not None


def _key(input: ClosingInput, step: str) -> str:
    """The idempotency key of one step: deal id + quote version + step."""
    return f"{input.deal_id}.v{input.quote_version}.{step}"


def _due(days: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)


def _metadata(input: ClosingInput) -> dict[str, str]:
    return {"dealflow_deal_id": input.deal_id, "quote_version": str(input.quote_version)}


def _charges_by_key(plan: BillingPlan) -> list[Charge]:
    """One charge per key (the first phase that has it): one Stripe product each."""
    seen: dict[str, Charge] = {}
    for phase in plan.phases:
        for charge in phase.charges:
            seen.setdefault(charge.key, charge)
    return list(seen.values())


def _note_body(input: ClosingInput, key: str) -> str:
    quote, e = input.quote, html.escape
    documents = "".join(
        f'<li><a href="{e(d.url)}">{e(d.kind.replace("_", " "))}</a> ({e(d.id)}), '
        f"SHA-256 <code>{e(d.sha256)}</code></li>"
        for d in input.signed_documents
    )
    return (
        f"<p><strong>Closed won</strong>: {e(input.terms.name)}, quote version "
        f"{input.quote_version}: {e(format_money(quote.total, quote.currency))} "
        f"({e(format_money(quote.taxable_amount, quote.currency))} before tax), closed "
        f"{input.close_date.isoformat()}.</p>"
        f"<p>Signed documents:</p><ul>{documents or '<li>none recorded</li>'}</ul>"
        f"<p>dealflow reference: {e(key)}</p>"
    )
