"""DealClosureWorkflow: from "ready to close" to a priced quote, a contract and its approvals.

One per deal (id ``deal-closure/<deal id>``, see ``dealflow.ids``).

Signals:  ``deal_updated(DealUpdated)`` — the rep changed the deal (PATCH); a closure waiting in
          ``needs_attention`` or ``changes_requested`` re-reads it.
          ``retry(by: str)`` — ops (or the owner) fixed what made a step fail: run the failed step
          again (``POST /v1/deals/{id}/retry``, or send it from the Temporal UI with the input
          ``"your@email"``). A parked child's failure is retried by forwarding it to the child.
          ``retry_closing(by: str)`` — the older name of ``retry`` (kept: callers and histories).
          ``child_parked(ChildPark)`` — from a child (approval chain, signature) that parked or
          resumed, so this closure shows (or stops showing) ``needs_attention``.
          ``invoice_paid(InvoicePaid)``, ``offline_signed(OfflineSignature)``.
Updates:  ``cancel(CancelRequest) -> DealClosureStatus`` — validated: refused once the closure has
          ended (closed_won, rejected, cancelled); accepted in every other stage, including
          ``needs_attention`` and ``declined``; returns after the cancellation is recorded.
Queries:  ``status() -> DealClosureStatus`` — everything ``GET /v1/deals/{id}`` shows live;
          ``parked`` says which step failed and why while the closure waits for a retry.

Failures: every activity has a retry budget (``RetryBudget``). An activity or child that gives up
(non-retryable error, or budget spent) parks the closure in ``needs_attention`` with the error
(see ``workflows/parking.py``); a retry re-runs only the failed step.

The approval plan runs as a child ``ApprovalChainWorkflow`` per quote version. "Request changes"
loops back: the rep's PATCH produces a new quote version and documents, and only the roles whose
reviewed inputs changed are asked again; the other approvals carry over.

Stage changes are mirrored to the ``DealStage`` search attribute and, through an activity, to the
deal row and the audit trail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from activities.closing import ClosingActivities
    from activities.deals import (
        DEAL_NOT_FOUND,
        NO_APPROVER_FOR_ROLE,
        QUOTE_VERIFICATION_FAILED,
        DealActivities,
    )
    from activities.handoff import HandoffActivities, StartHandoffInput
    from dealflow.ids import (
        SA_DEAL_AMOUNT,
        SA_DEAL_STAGE,
        approval_chain_workflow_id,
        approval_step_id,
        signature_workflow_id,
    )
    from messages.approval import (
        ApprovalChainInput,
        ApprovalChainStatus,
        ApprovalOptions,
        CarriedApproval,
        DealSummary,
        NotifyInput,
        RequestSpec,
        StageSpec,
        Withdrawal,
    )
    from messages.closure import (
        CancelRequest,
        ClosingInput,
        DealClosureInput,
        DealClosureStatus,
        DealUpdated,
        InvoicePaid,
        LoadDealInput,
        LoadDealResult,
        PlanApprovalsInput,
        PlanApprovalsResult,
        PlannedApprovalStatus,
        PricedQuote,
        PriceQuoteInput,
        QuoteSummary,
        RecordStageInput,
        RenderDocumentsInput,
        SignedDocumentRef,
        TimelineEntry,
    )
    from messages.signature import (
        OfflineSignature,
        SignatureInput,
        SignatureStatus,
        SignatureWithdrawal,
        SignerRef,
    )
    from workflows.approval_chain import ApprovalChainWorkflow
    from workflows.parking import (
        ChildPark,
        ParkedFailure,
        RetryBudget,
        cancelled,
        describe_failure,
        park_reason,
        worker_loss_timeout,
    )
    from workflows.signature import SignatureWorkflow

# Where cancel (and lost) is refused. "declined" is not here: the closure waits there for the
# rep's change, and a deal the customer declined may well be cancelled or lost instead.
TERMINAL_STAGES = frozenset({"closed_won", "handoff", "rejected", "cancelled", "closed_lost"})

# Replay safety: closures started before the approval chain existed waited at
# awaiting_approval for a cancel; they keep doing so. New ones run the chain.
APPROVAL_CHAIN_PATCH = "approval-chain-v1"
# Likewise, closures recorded before signature tracking waited at awaiting_signature.
SIGNATURE_PATCH = "signature-v1"
# Closures recorded before this let a running activity (retrying, say) finish before a cancel
# took effect; new ones cancel the activity at once.
CANCEL_INTERRUPTS_PATCH = "cancel-interrupts-activity"
# Closures won before the handoff existed went on to watch the payment at closed_won.
HANDOFF_PATCH = "handoff-v1"
# Closures recorded before this re-read the child's park count after every await in
# _await_child, so a child_parked signal handled during that await (the chain's "resumed" while
# the retry was being forwarded, or a re-park while a stage was recorded) was taken as seen and
# never shown; new ones take the count when they read the park.
CHILD_PARK_SEEN_PATCH = "child-park-seen-when-read"

# Database, rendering and closing activities: a few quick retries ride out a restart or a lock
# timeout; the budget (RetryBudget: 10 attempts over about 5 minutes) then parks the closure in
# needs_attention so a person sees it, instead of retrying unseen forever. Business errors are
# non-retryable and named. The closure builds the policy from its options (tests shorten it);
# this constant is the default, for reference.
NON_RETRYABLE = [DEAL_NOT_FOUND, QUOTE_VERIFICATION_FAILED, NO_APPROVER_FOR_ROLE]
LOCAL_SYSTEM_RETRY: RetryPolicy = RetryBudget().policy(non_retryable=NON_RETRYABLE)
# Writing needs_attention itself while parking: two quick tries, then show it anyway (the query
# and search attribute) — the park must not wait out a full budget to become visible.
PARK_RECORD_ATTEMPTS = 2


class _Cancelled(Exception):
    """Raised inside the workflow at the next checkpoint after a cancel was accepted."""


@workflow.defn(name="DealClosure")
class DealClosureWorkflow:
    @workflow.init
    def __init__(self, input: DealClosureInput) -> None:
        self._input = input
        self._status = DealClosureStatus(deal_id=input.deal_id, stage="quoting")
        self._latest_revision = 0
        self._cancel: CancelRequest | None = None
        self._stage_seq = 0
        self._retry = 0  # bumped by retry / retry_closing
        self._retry_by = "ops"
        self._paid: InvoicePaid | None = None
        self._signature_handle = None
        self._child_park: ChildPark | None = None
        self._child_park_seq = 0
        self._finishing = False  # recording the cancellation: checkpoints no longer raise
        self._won = False  # closed_won reached: only the payment is watched; no cancel

    # --- the process -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DealClosureInput) -> DealClosureStatus:
        try:
            await self._record_stage("quoting", None)
            loaded = await self._load_valid_deal()
            while True:
                priced = await self._price(loaded)
                await self._render(priced.version)
                plan = await self._plan_approvals(priced.version)
                if not workflow.patched(APPROVAL_CHAIN_PATCH):
                    return await self._wait_at_approval_before_chain(plan)
                if not plan.plan.is_empty:
                    await self._record_stage("awaiting_approval", None)
                    chain = await self._step(
                        "approval_chain",
                        lambda loaded=loaded, priced=priced, plan=plan: self._collect_approvals(
                            loaded, priced, plan
                        ),
                    )
                    if chain.outcome == "rejected":
                        self._note(
                            "approval.rejected", f"{chain.decided_by}: {chain.comment or ''}"
                        )
                        await self._record_stage(
                            "rejected", f"Rejected by {chain.decided_by}: {chain.comment or ''}"
                        )
                        return self._status
                    if chain.outcome == "withdrawn":
                        raise _Cancelled()
                    if chain.outcome == "changes_requested":
                        await self._record_stage(
                            "changes_requested",
                            f"Changes requested by {chain.decided_by}: {chain.comment or ''}",
                        )
                        loaded = await self._wait_for_fix()
                        continue
                if plan.plan.is_empty and not self._status.approval_steps:
                    self._note("approval.not_required", "No approval rule applies to this quote")
                    await self._record_stage("awaiting_signature", "No approval needed")
                else:
                    await self._record_stage("awaiting_signature", "All approvals given")
                if not workflow.patched(SIGNATURE_PATCH):
                    # Recorded before signature tracking existed: wait for a cancel, as then.
                    await workflow.wait_condition(lambda: self._cancel is not None)
                    raise _Cancelled()
                signature = await self._step(
                    "signature",
                    lambda loaded=loaded, priced=priced: self._collect_signature(loaded, priced),
                )
                if signature.status == "completed":
                    break
                if self._cancel is not None:
                    raise _Cancelled()
                if signature.status == "declined":
                    await self._record_stage(
                        "declined", f"Declined: {signature.declined_reason or 'no reason given'}"
                    )
                else:
                    await self._record_stage(
                        "needs_attention",
                        f"The envelope was {signature.status}; change the deal to send a new one",
                    )
                loaded = await self._wait_for_fix()
            await self._close_won(loaded, priced, signature)
            return self._status
        except _Cancelled:
            return await self._finish_cancelled()

    async def _wait_for_fix(self) -> LoadDealResult:
        """Wait for the rep's PATCH (a new revision), then load the deal again."""
        seen = self._latest_revision
        await workflow.wait_condition(
            lambda: self._latest_revision > seen or self._cancel is not None
        )
        self._checkpoint()
        await self._record_stage("quoting", None)
        return await self._load_valid_deal()

    async def _collect_signature(
        self, loaded: LoadDealResult, priced: PricedQuote
    ) -> SignatureStatus:
        """Send the contract package for signature as a child workflow and wait for its end."""
        assert loaded.terms is not None
        version = priced.version
        child_id = signature_workflow_id(self._input.deal_id, version)
        handle = await workflow.start_child_workflow(
            SignatureWorkflow.run,
            SignatureInput(
                deal_id=self._input.deal_id,
                deal_name=loaded.terms.name,
                quote_version=version,
                owner_email=self._input.owner_email,
                documents=[d for d in self._status.documents if d.version == version],
                signers=[
                    SignerRef(
                        name=s.name, email=s.email, title=s.title, routing_order=s.routing_order
                    )
                    for s in loaded.terms.signers
                ],
                timing=self._input.options.signature,
                retry=self._input.options.retry,
            ),
            id=child_id,
        )
        self._status.signature_workflow_id = child_id
        self._signature_handle = handle

        async def withdraw() -> None:
            assert self._cancel is not None
            await handle.signal(
                SignatureWorkflow.withdraw,
                SignatureWithdrawal(
                    by=self._cancel.by, reason=self._cancel.reason or "Deal cancelled"
                ),
            )

        try:
            result = await self._await_child(handle, withdraw)
        finally:
            self._signature_handle = None
        self._status.signature_workflow_id = None
        self._status.signature = result
        if result.status == "completed":
            self._status.documents = self._status.documents + result.documents
            self._note("signature.completed", f"method {result.method}")
        else:
            self._note(f"signature.{result.status}", result.declined_reason)
        return result

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

    async def _watch_payment(self, billing) -> None:  # noqa: ANN001 - BillingResult
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

    async def _wait_at_approval_before_chain(self, plan: PlanApprovalsResult) -> DealClosureStatus:
        """The pre-chain behaviour, kept for closures whose history was recorded without it."""
        if plan.plan.is_empty:
            self._note("approval.not_required", "No approval rule applies to this quote")
            await self._record_stage("awaiting_signature", "No approval needed")
        else:
            await self._record_stage("awaiting_approval", None)
        await workflow.wait_condition(lambda: self._cancel is not None)
        return await self._finish_cancelled()

    async def _finish_cancelled(self) -> DealClosureStatus:
        assert self._cancel is not None
        self._finishing = True
        self._status.parked = None
        self._note("closure.cancelled", self._cancel.reason or f"by {self._cancel.by}")
        lost = self._cancel.lost
        await self._record_stage(
            "closed_lost" if lost else "cancelled", lost.reason if lost else self._cancel.reason
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _collect_approvals(
        self, loaded: LoadDealResult, priced: PricedQuote, plan: PlanApprovalsResult
    ) -> ApprovalChainStatus:
        """Run the plan as a child workflow; approvals whose inputs did not change carry over."""
        assert loaded.terms is not None
        version = priced.version
        previous = {
            s.role: s
            for s in self._status.approval_steps
            if s.status in ("approved", "carried_over")
        }
        stages: dict[int, StageSpec] = {}
        carried: list[CarriedApproval] = []
        modes = {st.index: st.mode for st in plan.plan.stages}
        for req in plan.requests:
            step_id = approval_step_id(self._input.deal_id, version, req.stage, req.role)
            before = previous.get(req.role)
            if before is not None and before.inputs_sha256 == req.inputs_sha256:
                carried.append(
                    CarriedApproval(
                        step_id=step_id,
                        stage=req.stage,
                        role=req.role,
                        approver_email=req.approver_email,
                        reason=req.reason,
                        inputs_sha256=req.inputs_sha256,
                        decided_by=before.decided_by or before.approver_email,
                        decided_at=before.decided_at or workflow.now(),
                        from_version=before.carried_from_version or version - 1,
                    )
                )
                self._note(
                    "approval.carried_over",
                    f"{req.role}: nothing this role reviews changed since its approval",
                )
                continue
            if before is not None:
                self._note("approval.asked_again", f"{req.role}: what this role reviews changed")
            stages.setdefault(
                req.stage, StageSpec(index=req.stage, mode=modes[req.stage], requests=[])
            ).requests.append(RequestSpec(step_id=step_id, **req.model_dump()))  # determinism-ok
        q = priced.quote
        terms = loaded.terms
        chain_input = ApprovalChainInput(
            deal=DealSummary(
                deal_id=self._input.deal_id,
                name=terms.name,
                customer=terms.account.name,
                owner_email=self._input.owner_email,
                total=str(q.total),
                currency=q.currency,
                discount_pct=str(terms.discount_pct.normalize()),
                term_months=terms.term_months,
                close_by=loaded.close_by,
            ),
            quote_version=version,
            stages=[stages[i] for i in sorted(stages)],
            carried=carried,
            options=ApprovalOptions(
                activity_timeout_seconds=self._input.options.activity_timeout_seconds,
                sla_override_seconds=self._input.options.approval_sla_override_seconds,
                escalation_levels=plan.escalation_levels,
                link_ttl_hours=plan.link_ttl_hours,
                min_history=plan.min_history,
                retry=self._input.options.retry,
            ),
        )
        chain_id = approval_chain_workflow_id(self._input.deal_id, version)
        handle = await workflow.start_child_workflow(
            ApprovalChainWorkflow.run, chain_input, id=chain_id
        )
        self._status.approval_chain_workflow_id = chain_id

        async def withdraw() -> None:
            assert self._cancel is not None
            await handle.signal(
                ApprovalChainWorkflow.withdraw,
                Withdrawal(by=self._cancel.by, reason=self._cancel.reason or "deal cancelled"),
            )

        result = await self._await_child(handle, withdraw)
        self._status.approval_chain_workflow_id = None
        self._status.approval_steps = result.steps
        return result

    async def _load_valid_deal(self) -> LoadDealResult:
        """Load the deal; while it has problems, wait in needs_attention for the rep's fix."""
        while True:
            self._checkpoint()
            loaded = await self._activity(
                "load_deal", DealActivities.load_deal, LoadDealInput(deal_id=self._input.deal_id)
            )
            self._latest_revision = max(self._latest_revision, loaded.revision)
            if not loaded.problems:
                self._status.problems = []
                return loaded
            self._status.problems = list(loaded.problems)
            reason = "; ".join(p.message for p in loaded.problems)
            await self._record_stage("needs_attention", reason)
            seen = loaded.revision
            await workflow.wait_condition(
                lambda seen=seen: self._latest_revision > seen or self._cancel is not None
            )
            self._checkpoint()
            self._note("deal.updated", f"revision {self._latest_revision}")
            await self._record_stage("quoting", None)

    async def _price(self, loaded: LoadDealResult) -> PricedQuote:
        self._checkpoint()
        assert loaded.terms is not None
        version = (self._status.quote.version if self._status.quote else 0) + 1
        priced = await self._activity(
            "price_quote",
            DealActivities.price_quote,
            PriceQuoteInput(
                deal_id=self._input.deal_id,
                version=version,
                revision=loaded.revision,
                terms=loaded.terms,
            ),
        )
        q = priced.quote
        self._status.quote = QuoteSummary(
            version=priced.version,
            subtotal=q.subtotal,
            discount=q.discount,
            tax=q.tax.amount,
            total=q.total,
            currency=q.currency,
            tax_note=q.tax.note,
            terms_sha256=priced.terms_sha256,
        )
        workflow.upsert_search_attributes([SA_DEAL_AMOUNT.value_set(float(q.total))])
        self._note("quote.priced", f"v{priced.version}: total {q.total} {q.currency}")
        return priced

    async def _render(self, version: int) -> None:
        self._checkpoint()
        result = await self._activity(
            "render_documents",
            DealActivities.render_documents,
            RenderDocumentsInput(deal_id=self._input.deal_id, version=version),
            heartbeat=True,
        )
        self._status.documents = list(result.documents)
        for doc in result.documents:
            self._note("document.rendered", f"{doc.kind} v{doc.version}: {doc.reason}")

    async def _plan_approvals(self, version: int) -> PlanApprovalsResult:
        self._checkpoint()
        result = await self._activity(
            "plan_approvals",
            DealActivities.plan_approvals,
            PlanApprovalsInput(deal_id=self._input.deal_id, version=version),
        )
        self._status.policy_version = result.plan.policy_version
        self._status.policy_sha256 = result.plan.policy_sha256
        self._status.approval_required = not result.plan.is_empty
        self._status.approvals = [
            PlannedApprovalStatus(
                step_id=approval_step_id(self._input.deal_id, version, stage.index, approval.role),
                stage=stage.index,
                mode=stage.mode,
                role=approval.role,
                approver_email=result.assignees[approval.role],
                reason=" ".join(approval.reasons),
                reasons=list(approval.reasons),
                status="planned",
            )
            for stage in result.plan.stages
            for approval in stage.approvals
        ]
        for a in self._status.approvals:
            self._note("approval.planned", f"{a.role} ({a.approver_email}): {a.reason}")
        return result

    # --- messages --------------------------------------------------------------------------

    @workflow.signal
    def deal_updated(self, update: DealUpdated) -> None:
        self._latest_revision = max(self._latest_revision, update.revision)

    @workflow.signal
    def retry(self, by: str) -> None:
        """Ops fixed what made a step fail; run the failed step again (here or in a child)."""
        self._retry += 1
        self._retry_by = by
        self._note("retry", f"requested by {by}")

    @workflow.signal
    def retry_closing(self, by: str) -> None:
        """The older name of ``retry``, from when only closing could park."""
        self._retry += 1
        self._retry_by = by
        self._note("closing.retry", f"requested by {by}")

    @workflow.signal
    def child_parked(self, park: ChildPark) -> None:
        """A child parked (``failure`` set) or resumed (``failure`` None)."""
        self._child_park = park if park.failure is not None else None
        self._child_park_seq += 1

    @workflow.signal
    def invoice_paid(self, paid: InvoicePaid) -> None:
        if self._paid is None:
            self._paid = paid

    @workflow.signal
    async def offline_signed(self, signature: OfflineSignature) -> None:
        """The rep uploaded a wet-signed PDF; pass it to the signature tracking."""
        if self._signature_handle is not None:
            await self._signature_handle.signal(SignatureWorkflow.offline_signed, signature)

    @workflow.update
    async def cancel(self, request: CancelRequest) -> DealClosureStatus:
        self._cancel = request
        await workflow.wait_condition(lambda: self._status.stage in ("cancelled", "closed_lost"))
        return self._status

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status.stage in TERMINAL_STAGES or self._cancel is not None or self._won:
            raise ApplicationError(
                f"the closure already ended or is ending (stage {self._status.stage})",
                type="ClosureEnded",
            )

    @workflow.query
    def status(self) -> DealClosureStatus:
        return self._status

    # --- helpers ---------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        if self._cancel is not None and not self._finishing:
            raise _Cancelled()

    # --- park and retry --------------------------------------------------------------------

    async def _activity(self, name: str, method, arg, *, heartbeat: bool = False):  # noqa: ANN001
        """Run one activity; when it gives up, park until a retry, then run it again."""
        return await self._step(name, lambda: self._run_activity(method, arg, heartbeat))

    async def _run_activity(self, method, arg, heartbeat: bool):  # noqa: ANN001, ANN202
        """The activity, cancelled when the closure is (a cancel never waits out a retry)."""
        options = self._activity_options(heartbeat=heartbeat)
        if self._finishing or self._won or not workflow.patched(CANCEL_INTERRUPTS_PATCH):
            return await workflow.execute_activity_method(method, arg, **options)
        handle = workflow.start_activity_method(method, arg, **options)
        await workflow.wait_condition(lambda: handle.done() or self._cancellable())
        if not handle.done():
            handle.cancel()
        try:
            return await handle
        except ActivityError:
            if self._cancellable():
                raise _Cancelled() from None
            raise

    async def _step(self, name: str, call):  # noqa: ANN001, ANN202 - a coroutine factory
        """Await ``call()``; an activity or child that gave up parks the closure, then retries."""
        while True:
            try:
                return await call()
            except (ActivityError, ChildWorkflowError) as err:
                if cancelled(err):
                    raise
                await self._park(name, err)

    def _cancellable(self) -> bool:
        return self._cancel is not None and not self._finishing and not self._won

    async def _park(self, name: str, err: BaseException) -> None:
        """Show needs_attention with the error; wait for a retry (or a cancel)."""
        error_type, message = describe_failure(err)
        failure = ParkedFailure(
            step=name,
            error_type=error_type,
            message=message,
            since=workflow.now(),
            workflow_id=workflow.info().workflow_id,
        )
        resume = (self._status.stage, self._status.stage_reason)
        reason = park_reason(failure)
        if resume[0] == "closing":
            reason = f"Closing failed: {reason}"
        seen = self._retry  # before the park is visible: a retry sent while recording it counts
        self._status.parked = failure
        self._note("step.failed", reason)
        await self._show_stage("needs_attention", reason)
        await workflow.wait_condition(lambda: self._retry > seen or self._cancellable())
        self._status.parked = None
        self._checkpoint()
        self._note("step.retried", f"{name}, requested by {self._retry_by}")
        if resume[0] != "needs_attention":
            await self._show_stage(*resume)

    async def _await_child(self, handle, withdraw):  # noqa: ANN001, ANN202
        """Wait for a child's result, showing its parks and forwarding retries and a cancel."""
        withdrawn = False
        shown: tuple[str, str | None] | None = None  # the stage to go back to after a park
        # Retries counted from the moment a park became visible: one sent before it (from the
        # UI, while nothing was parked) does not count; one sent while we record it does.
        retry_mark = self._retry
        counted_when_read = workflow.patched(CHILD_PARK_SEEN_PATCH)
        seen_park = self._child_park_seq
        if counted_when_read and self._child_park is not None:
            # It parked before we began to wait (its signal came with its start): not yet shown.
            seen_park -= 1
        while True:
            if not counted_when_read:
                seen_park = self._child_park_seq
            await workflow.wait_condition(
                lambda seen_park=seen_park, withdrawn=withdrawn, mark=retry_mark: (
                    handle.done()
                    or (self._cancel is not None and not withdrawn)
                    or self._child_park_seq != seen_park
                    or (self._child_park is not None and self._retry != mark)
                )
            )
            if handle.done():
                break
            if self._cancel is not None and not withdrawn:
                withdrawn = True
                await withdraw()
                continue
            park = self._child_park
            if self._child_park_seq == seen_park:
                # A retry while the child is parked; it resumes and tells us (no failure).
                assert park is not None
                retry_mark = self._retry
                await workflow.get_external_workflow_handle(park.workflow_id).signal(
                    "retry", self._retry_by
                )
                continue
            # What we show is the park as of now: a signal handled while we record it (or while
            # a later retry is forwarded) changes the count again and is shown next.
            seen_park = self._child_park_seq
            if park is not None and park.failure is not None:
                if shown is None:
                    shown = (self._status.stage, self._status.stage_reason)
                retry_mark = self._retry
                self._status.parked = park.failure
                reason = park_reason(park.failure)
                self._note("step.failed", reason)
                await self._show_stage("needs_attention", reason)
            elif shown is not None:
                self._status.parked = None
                self._note("step.retried", f"requested by {self._retry_by}")
                await self._show_stage(*shown)
                shown = None
        self._status.parked = None
        self._child_park = None
        return await handle

    async def _show_stage(self, stage: str, reason: str | None) -> None:
        """Record a stage while parking or resuming: tried briefly, then shown anyway.

        The failing step may be ``record_stage`` itself; the park must still be visible (the
        query and the search attribute) and must not park again.
        """
        self._stage_seq += 1
        try:
            await workflow.execute_activity_method(
                DealActivities.record_stage,
                self._stage_input(stage, reason),
                **self._activity_options(attempts=PARK_RECORD_ATTEMPTS),
            )
        except ActivityError as err:
            self._note("stage.not_recorded", f"{stage}: {describe_failure(err)[1]}")
        self._show(stage, reason)

    def _note(self, event: str, detail: str | None = None) -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    async def _record_stage(self, stage: str, reason: str | None) -> None:
        """Write the stage to the database and audit trail, then show it.

        The query, the search attribute and the deal row change together, after the write: a
        reader who sees a stage can rely on it being recorded.
        """
        self._stage_seq += 1
        # One input (one idempotency key) however often a park makes us try it again.
        record = self._stage_input(stage, reason)
        await self._activity("record_stage", DealActivities.record_stage, record)
        self._show(stage, reason)

    def _stage_input(self, stage: str, reason: str | None) -> RecordStageInput:
        return RecordStageInput(
            deal_id=self._input.deal_id,
            stage=stage,
            reason=reason,
            at=workflow.now(),
            idempotency_key=f"{workflow.info().workflow_id}/{workflow.info().run_id}"
            f"/stage/{self._stage_seq}",
        )

    def _show(self, stage: str, reason: str | None) -> None:
        self._status.stage = stage
        self._status.stage_reason = reason
        self._note(f"stage.{stage}", reason)
        workflow.upsert_search_attributes([SA_DEAL_STAGE.value_set(stage)])

    def _activity_options(self, *, heartbeat: bool = False, attempts: int | None = None) -> dict:
        timeout = timedelta(seconds=self._input.options.activity_timeout_seconds)
        policy = self._input.options.retry.policy(non_retryable=NON_RETRYABLE)
        if attempts is not None:
            policy.maximum_attempts = attempts
        options: dict = {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": policy,
        }
        if heartbeat:
            # Rendering a large package takes a while, longer still when many deals render at
            # once on one worker; the activity beats while each PDF renders (and the worker's
            # pulse between), so the heartbeat timeout notices a dead worker in seconds and the
            # overall bound can be generous (a package that is slow is not stuck).
            options["start_to_close_timeout"] = timeout * 10
        return options
