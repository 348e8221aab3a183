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

Where the rest is: what it exchanges in ``messages/closure.py``; how a step runs (park and retry,
children, stage recording) in ``workflows/closure_steps.py``; the closing stage after signature
in ``workflows/closing.py``; the activities in ``activities/deals.py`` and ``closing.py``.
"""

from __future__ import annotations

from functools import partial

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.deals import (
        DealActivities,
    )
    from dealflow.ids import (
        SA_DEAL_AMOUNT,
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
        RequestSpec,
        StageSpec,
        Withdrawal,
    )
    from messages.closure import (
        CancelRequest,
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
        RenderDocumentsInput,
    )
    from messages.parking import ChildPark
    from messages.signature import (
        OfflineSignature,
        SignatureInput,
        SignatureStatus,
        SignatureWithdrawal,
        SignerRef,
    )
    from workflows.approval_chain import ApprovalChainWorkflow
    from workflows.closing import ClosingStage
    from workflows.closure_steps import ClosureCancelled
    from workflows.signature import SignatureWorkflow

# Where cancel (and lost) is refused. "declined" is not here: the closure waits there for the
# rep's change, and a deal the customer declined may well be cancelled or lost instead.
TERMINAL_STAGES = frozenset({"closed_won", "handoff", "rejected", "cancelled", "closed_lost"})

# Replay safety: closures started before the approval chain existed waited at
# awaiting_approval for a cancel; they keep doing so. New ones run the chain.
APPROVAL_CHAIN_PATCH = "approval-chain-v1"
# Likewise, closures recorded before signature tracking waited at awaiting_signature.
SIGNATURE_PATCH = "signature-v1"
# Closures recorded before this rendered the contract package before planning and asking for
# approvals. New ones plan, start the approval chain (its requests go out), then render while
# the approvers read: an approver is asked about the quote version and the inputs their role
# reviews (their checksum), none of which the PDFs carry, so nothing they approve waits on a
# render. The deal shows awaiting_approval once its documents are stored, and the envelope
# still goes out only with them.
RENDER_BESIDE_APPROVALS_PATCH = "render-beside-approvals"
# Those closures also render a large package in calls of this many documents (a worker's two
# renderer processes take two side by side): a worker lost mid-package costs one short call,
# not the whole package's retry budget.
RENDER_AT_ONCE = 2


@workflow.defn(name="DealClosure")
class DealClosureWorkflow(ClosingStage):
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
        self._signature_handle: (
            workflow.ChildWorkflowHandle[SignatureWorkflow, SignatureStatus] | None
        ) = None
        self._child_park: ChildPark | None = None
        self._child_park_seq = 0
        self._finishing = False  # recording the cancellation: checkpoints no longer raise
        self._won = False  # closed_won reached: only the payment is watched; no cancel
        # The quote version whose documents are still to render (RENDER_BESIDE_APPROVALS_PATCH).
        self._render_pending: int | None = None

    # --- the process -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DealClosureInput) -> DealClosureStatus:
        try:
            await self._record_stage("quoting", None)
            loaded = await self._load_valid_deal()
            while True:
                priced = await self._price(loaded)
                beside = workflow.patched(RENDER_BESIDE_APPROVALS_PATCH)
                if beside:
                    self._render_pending = priced.version
                else:
                    await self._render(priced.version)
                plan = await self._plan_approvals(priced.version)
                if not workflow.patched(APPROVAL_CHAIN_PATCH):
                    return await self._wait_at_approval_before_chain(plan)
                if not plan.plan.is_empty:
                    if not beside:  # shown by _collect_approvals once the documents are in
                        await self._record_stage("awaiting_approval", None)
                    chain = await self._step(
                        "approval_chain",
                        partial(self._collect_approvals, loaded, priced, plan),
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
                        raise ClosureCancelled()
                    if chain.outcome == "changes_requested":
                        await self._record_stage(
                            "changes_requested",
                            f"Changes requested by {chain.decided_by}: {chain.comment or ''}",
                        )
                        loaded = await self._wait_for_fix()
                        continue
                await self._render_if_pending()  # no approval asked: render now
                if plan.plan.is_empty and not self._status.approval_steps:
                    self._note("approval.not_required", "No approval rule applies to this quote")
                    await self._record_stage("awaiting_signature", "No approval needed")
                else:
                    await self._record_stage("awaiting_signature", "All approvals given")
                if not workflow.patched(SIGNATURE_PATCH):
                    # Recorded before signature tracking existed: wait for a cancel, as then.
                    await workflow.wait_condition(lambda: self._cancel is not None)
                    raise ClosureCancelled()
                signature = await self._step(
                    "signature",
                    partial(self._collect_signature, loaded, priced),
                )
                if signature.status == "completed":
                    break
                if self._cancel is not None:
                    raise ClosureCancelled()
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
        except ClosureCancelled:
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

        withdrawn = False
        if self._render_pending is not None:
            # The requests are going out; the documents render meanwhile (parking here, with
            # the chain running, if the render gives up). A cancel seen before we wait on the
            # chain (while they render, or as the stage is recorded) withdraws it, as one
            # while we wait does; the chain's "withdrawn" outcome then ends the closure.
            try:
                await self._render_if_pending()
                await self._record_stage("awaiting_approval", None)
            except ClosureCancelled:
                await withdraw()
                withdrawn = True
        result = await self._await_child(handle, withdraw, withdrawn=withdrawn)
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

            def fixed(seen: int = seen) -> bool:
                return self._latest_revision > seen or self._cancel is not None

            await workflow.wait_condition(fixed)
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

    async def _render_if_pending(self) -> None:
        """Render the documents of the version priced last, if that is still to be done: a
        few at a time (``RENDER_AT_ONCE``), each call a short activity with its own budget."""
        if self._render_pending is not None:
            await self._render(self._render_pending, at_most=RENDER_AT_ONCE)
            self._render_pending = None

    async def _render(self, version: int, at_most: int | None = None) -> None:
        while True:
            self._checkpoint()
            result = await self._activity(
                "render_documents",
                DealActivities.render_documents,
                RenderDocumentsInput(deal_id=self._input.deal_id, version=version, at_most=at_most),
                heartbeat=True,
            )
            if not result.remaining:
                break
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
