"""DealClosureWorkflow: from "ready to close" to a priced quote, a contract and its approvals.

One per deal (id ``deal-closure/<deal id>``, see ``dealflow.ids``).

Signals:  ``deal_updated(DealUpdated)`` — the rep changed the deal (PATCH); a closure waiting in
          ``needs_attention`` re-reads it.
Updates:  ``cancel(CancelRequest) -> DealClosureStatus`` — validated: refused once the closure has
          ended; returns after the cancellation is recorded.
Queries:  ``status() -> DealClosureStatus`` — everything ``GET /v1/deals/{id}`` shows live.

Stage changes are mirrored to the ``DealStage`` search attribute and, through an activity, to the
deal row and the audit trail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.deals import (
        DEAL_NOT_FOUND,
        NO_APPROVER_FOR_ROLE,
        QUOTE_VERIFICATION_FAILED,
        DealActivities,
        DocumentRef,
        LoadDealInput,
        LoadDealResult,
        PlanApprovalsInput,
        PlanApprovalsResult,
        PricedQuote,
        PriceQuoteInput,
        RecordStageInput,
        RenderDocumentsInput,
    )
    from dealflow.ids import SA_DEAL_AMOUNT, SA_DEAL_STAGE
    from domain.models import Problem

TERMINAL_STAGES = frozenset({"closed_won", "rejected", "declined", "cancelled"})

# Database and rendering activities: a few quick retries ride out a restart or a lock timeout;
# past a minute something is wrong that a person should see, but we keep trying (the workflow is
# durable) at a slow pace rather than give up. Business errors are non-retryable and named.
LOCAL_SYSTEM_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=[DEAL_NOT_FOUND, QUOTE_VERIFICATION_FAILED, NO_APPROVER_FOR_ROLE],
)


class DealClosureOptions(BaseModel):
    """Timing chosen by the caller from Settings: nothing in workflows/ reads the environment."""

    activity_timeout_seconds: float = 30.0


class DealClosureInput(BaseModel):
    deal_id: str
    owner_email: str
    options: DealClosureOptions = DealClosureOptions()


class DealUpdated(BaseModel):
    revision: int
    by: str


class CancelRequest(BaseModel):
    by: str
    reason: str | None = None


class QuoteSummary(BaseModel):
    version: int
    subtotal: Decimal
    discount: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    tax_note: str
    terms_sha256: str


class PlannedApprovalStatus(BaseModel):
    step_id: str
    stage: int
    mode: str
    role: str
    approver_email: str
    reason: str
    reasons: list[str]
    status: str  # "planned" until the approval chain asks


class TimelineEntry(BaseModel):
    at: datetime
    event: str
    detail: str | None = None


class DealClosureStatus(BaseModel):
    deal_id: str
    stage: str
    stage_reason: str | None = None
    problems: list[Problem] = []
    quote: QuoteSummary | None = None
    documents: list[DocumentRef] = []
    approvals: list[PlannedApprovalStatus] = []
    approval_required: bool | None = None
    policy_version: str | None = None
    policy_sha256: str | None = None
    timeline: list[TimelineEntry] = []


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

    # --- the process -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: DealClosureInput) -> DealClosureStatus:
        try:
            await self._record_stage("quoting", None)
            loaded = await self._load_valid_deal()
            priced = await self._price(loaded)
            await self._render(priced.version)
            plan = await self._plan_approvals(priced.version)
            if plan.plan.is_empty:
                self._note("approval.not_required", "No approval rule applies to this quote")
                await self._record_stage("awaiting_signature", "No approval needed")
            else:
                await self._record_stage("awaiting_approval", None)
            # The approval chain and signature tracking continue from here (later work). Until
            # then the closure stays open, answering queries and accepting a cancel.
            await workflow.wait_condition(lambda: self._cancel is not None)
            raise _Cancelled()
        except _Cancelled:
            assert self._cancel is not None
            self._note("closure.cancelled", self._cancel.reason or f"by {self._cancel.by}")
            await self._record_stage("cancelled", self._cancel.reason)
            return self._status

    async def _load_valid_deal(self) -> LoadDealResult:
        """Load the deal; while it has problems, wait in needs_attention for the rep's fix."""
        while True:
            self._checkpoint()
            loaded = await workflow.execute_activity_method(
                DealActivities.load_deal,
                LoadDealInput(deal_id=self._input.deal_id),
                **self._activity_options(),
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
        priced = await workflow.execute_activity_method(
            DealActivities.price_quote,
            PriceQuoteInput(
                deal_id=self._input.deal_id,
                version=version,
                revision=loaded.revision,
                terms=loaded.terms,
            ),
            **self._activity_options(),
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
        result = await workflow.execute_activity_method(
            DealActivities.render_documents,
            RenderDocumentsInput(deal_id=self._input.deal_id, version=version),
            **self._activity_options(heartbeat=True),
        )
        self._status.documents = list(result.documents)
        for doc in result.documents:
            self._note("document.rendered", f"{doc.kind} v{doc.version}: {doc.reason}")

    async def _plan_approvals(self, version: int) -> PlanApprovalsResult:
        self._checkpoint()
        result = await workflow.execute_activity_method(
            DealActivities.plan_approvals,
            PlanApprovalsInput(deal_id=self._input.deal_id, version=version),
            **self._activity_options(),
        )
        self._status.policy_version = result.plan.policy_version
        self._status.policy_sha256 = result.plan.policy_sha256
        self._status.approval_required = not result.plan.is_empty
        self._status.approvals = [
            PlannedApprovalStatus(
                step_id=f"{self._input.deal_id}.v{version}.s{stage.index}.{approval.role}",
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

    @workflow.update
    async def cancel(self, request: CancelRequest) -> DealClosureStatus:
        self._cancel = request
        await workflow.wait_condition(lambda: self._status.stage == "cancelled")
        return self._status

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._status.stage in TERMINAL_STAGES or self._cancel is not None:
            raise ApplicationError(
                f"the closure already ended or is ending (stage {self._status.stage})",
                type="ClosureEnded",
            )

    @workflow.query
    def status(self) -> DealClosureStatus:
        return self._status

    # --- helpers ---------------------------------------------------------------------------

    def _checkpoint(self) -> None:
        if self._cancel is not None:
            raise _Cancelled()

    def _note(self, event: str, detail: str | None = None) -> None:
        self._status.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    async def _record_stage(self, stage: str, reason: str | None) -> None:
        """Write the stage to the database and audit trail, then show it.

        The query, the search attribute and the deal row change together, after the write: a
        reader who sees a stage can rely on it being recorded.
        """
        self._stage_seq += 1
        await workflow.execute_activity_method(
            DealActivities.record_stage,
            RecordStageInput(
                deal_id=self._input.deal_id,
                stage=stage,
                reason=reason,
                at=workflow.now(),
                idempotency_key=f"{workflow.info().workflow_id}/{workflow.info().run_id}"
                f"/stage/{self._stage_seq}",
            ),
            **self._activity_options(),
        )
        self._status.stage = stage
        self._status.stage_reason = reason
        self._note(f"stage.{stage}", reason)
        workflow.upsert_search_attributes([SA_DEAL_STAGE.value_set(stage)])

    def _activity_options(self, *, heartbeat: bool = False) -> dict:
        timeout = timedelta(seconds=self._input.options.activity_timeout_seconds)
        options: dict = {"start_to_close_timeout": timeout, "retry_policy": LOCAL_SYSTEM_RETRY}
        if heartbeat:
            # Rendering a large package takes a while; the heartbeat lets a dead worker be noticed
            # sooner than the full timeout would.
            options["start_to_close_timeout"] = timeout * 4
            options["heartbeat_timeout"] = timeout
        return options
