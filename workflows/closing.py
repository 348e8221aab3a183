"""The closing stage of the deal closure, after signature: the CRM, Stripe billing, revenue
and commission (each done once), the handoff, then the payment watch.

``ClosingStage`` is a base of ``DealClosureWorkflow`` (``workflows/deal_closure.py``); the
activities are ``activities/closing.py``. Deterministic workflow code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from activities.closing import ClosingActivities
    from activities.handoff import HandoffActivities
    from messages.approval import NotifyInput
    from messages.closure import (
        BillingResult,
        ClosingInput,
        LoadDealResult,
        PricedQuote,
        SignedDocumentRef,
    )
    from messages.handoff import StartHandoffInput
    from messages.signature import SignatureStatus
    from workflows.closure_steps import ClosureSteps

# Closures won before the handoff existed went on to watch the payment at closed_won.
HANDOFF_PATCH = "handoff-v1"


class ClosingStage(ClosureSteps):
    """The steps after signature; ``_close_won`` is called once by the closure's ``run``."""

    async def _close_won(
        self, loaded: LoadDealResult, priced: PricedQuote, signature: SignatureStatus
    ) -> None:
        """The closed-won saga: CRM, Stripe, revenue and commission — each step done once.

        A failure no retry can fix (Stripe refuses the customer data, say) parks the deal in
        needs_attention; ops fix the data and send ``retry_closing`` (Temporal UI, or
        ``POST /v1/deals/{id}/closing/retry``). Steps already done are found done and skipped.
        """
        assert loaded.terms is not None
        await self._record_stage("closing", None)
        base = self._input.options.public_base_url
        closing = ClosingInput(
            deal_id=self._input.deal_id,
            quote_version=priced.version,
            owner_email=self._input.owner_email,
            external_id=loaded.external_id,
            terms=loaded.terms,
            quote=priced.quote,
            close_date=workflow.now().date(),
            signed_documents=[
                SignedDocumentRef(
                    id=d.id, kind=d.kind, sha256=d.sha256, url=f"{base}/v1/documents/{d.id}"
                )
                for d in signature.documents
            ],
        )
        # Each step parks on its own failure and a retry re-runs only it; the steps are also
        # idempotent (``closing_steps``), so a crash mid-step redoes nothing either.
        self._checkpoint()
        crm = await self._activity(
            "mark_crm_closed_won", ClosingActivities.mark_crm_closed_won, closing
        )
        self._status.crm = {
            "status": crm.status,
            "crm_deal_id": crm.crm_deal_id,
            "note_id": crm.note_id,
        }
        self._checkpoint()
        billing = await self._activity(
            "create_stripe_billing", ClosingActivities.create_stripe_billing, closing
        )
        self._status.billing = {
            "stripe_customer_id": billing.stripe_customer_id,
            "stripe_invoice_id": billing.stripe_invoice_id,
            "stripe_subscription_id": billing.stripe_subscription_id,
            "status": billing.status,
            "due_date": billing.due_date.isoformat() if billing.due_date else None,
            "amount_due": str(billing.amount_due),
        }
        # Billing exists now: from here the deal is won; a cancel could only lie about it.
        self._won = True
        revenue = await self._activity(
            "record_revenue_and_commission",
            ClosingActivities.record_revenue_and_commission,
            closing,
        )
        self._note(
            "revenue.recorded",
            f"{revenue.rows} months; commission {revenue.commission_amount} "
            f"payable on {revenue.commission_payable_on}",
        )
        await self._record_stage("closed_won", None)
        if workflow.patched(HANDOFF_PATCH):
            start = StartHandoffInput(
                deal_id=self._input.deal_id,
                owner_email=self._input.owner_email,
                closure=self._status.model_dump(mode="json"),
            )
            await self._activity("start_handoff", HandoffActivities.start_handoff, start)
            await self._record_stage("handoff", None)
        await self._watch_payment(billing)

    async def _watch_payment(self, billing: BillingResult) -> None:
        """Wait for invoice.paid; past the due date plus grace, tell the rep and finance once."""
        if billing.due_date is None:
            return
        due = datetime.combine(billing.due_date, datetime.min.time(), tzinfo=UTC)
        deadline = due + timedelta(seconds=self._input.options.payment_grace_seconds)
        remaining = deadline - workflow.now()
        try:
            await workflow.wait_condition(
                lambda: self._paid is not None,
                timeout=max(remaining, timedelta(milliseconds=1)),
            )
        except TimeoutError:
            text = (
                f"Invoice {billing.stripe_invoice_id or billing.stripe_subscription_id} for "
                f"deal {self._input.deal_id} is unpaid past its due date "
                f"{billing.due_date.isoformat()} and the grace period."
            )
            for who in filter(None, (self._input.owner_email, self._input.options.finance_email)):
                await self._activity(
                    "notify",
                    ApprovalActivities.notify,
                    NotifyInput(
                        recipient_email=who,
                        key=f"{workflow.info().workflow_id}/unpaid/{who}",
                        text=text,
                        deal_id=self._input.deal_id,
                    ),
                )
            self._note("billing.overdue", text)
            assert self._status.billing is not None
            self._status.billing["status"] = "overdue"
            await workflow.wait_condition(lambda: self._paid is not None)
        assert self._paid is not None and self._status.billing is not None
        paid = self._paid
        await self._step(
            "record_payment",
            lambda: workflow.execute_activity_method(
                ClosingActivities.record_payment,
                args=[paid, self._input.deal_id],
                **self._activity_options(),
            ),
        )
        self._status.billing["status"] = "paid"
        self._status.billing["paid_at"] = self._paid.paid_at.isoformat()
        self._note("billing.paid", self._paid.invoice_id)
