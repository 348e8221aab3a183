"""ApprovalChainWorkflow: run a deal's approval plan — requests, reminders, escalation, decisions.

A child of the deal closure, one per quote version (id ``approval-chain/<deal id>/v<version>``).
Stages run in order; inside a stage every request runs in parallel and the stage completes when
everyone approved (mode ``all``) or the first approval came (mode ``any``). A rejection ends the
chain ``rejected``; "request changes" ends it ``changes_requested``.

Updates:  ``decide(DecisionRequest) -> ApprovalStep`` — validated: only the holder of the request
          (the approver, or the escalation target once escalated) or their out-of-office
          delegate, only while pending, and never the deal's owner (``OwnerMayNotDecide``),
          whatever door they come by. The first decision wins; later ones are refused with
          "already decided by X".
Signals:  ``reassign(Reassignment)`` — an approver went out of office; their pending requests go
          to the delegate (never to the deal's owner: refused and recorded).
          ``withdraw(Withdrawal)`` — the deal was cancelled; pending requests are withdrawn and
          the chain ends (a stage's bookkeeping still running or retrying — decision_stats, the
          late notice — is cancelled, not waited out). ``retry(by: str)`` — run the activity
          that gave up again (the closure forwards its retry here; ops may also send it from
          the Temporal UI).
Queries:  ``status() -> ApprovalChainStatus`` (``parked`` while an activity waits for a retry).

Failures: an activity that gives up (non-retryable, or its ``RetryBudget`` spent) parks that
request (or the stage's bookkeeping) until ``retry``, and the chain tells the closure with the
``child_parked`` signal so the deal shows ``needs_attention``; see ``workflows/parking.py``.

Per request: deliver (Slack + email with a signed link), remind at ``reminder_at`` of the SLA,
escalate at the SLA to the backup (else the manager), who then holds the authority, and again up
to ``escalation_levels`` times. SLAs in business hours use the approver's time zone.

Where the rest is: what it exchanges in ``messages/approval.py``; its activity calls and parks in
``workflows/approval_steps.py``; the activities in ``activities/approvals.py``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from messages.approval import (
        ApprovalChainInput,
        ApprovalChainStatus,
        ApprovalStep,
        DecisionRequest,
        NotifyInput,
        OpenRequestInput,
        PersonInfo,
        Reassignment,
        RecordDecisionInput,
        RequestSpec,
        StageSpec,
        Withdrawal,
    )
    from messages.parking import ParkedFailure
    from workflows.approval_steps import ApprovalSteps

OWNER_MAY_NOT_DECIDE = "OwnerMayNotDecide"

# Replay safety: a stage that ends (a withdrawal, or a decision that settles it) cancels its
# request tasks. When the activity a request task awaits completes in the same workflow task as
# that signal or update, the SDK hands the task the activity's result and the cancellation is
# lost (a completed activity wins over a cancel request): the request went on to deliver and wait
# for its reminder while the stage waited for it to end, so the chain, and a cancel of the deal,
# hung for good. New chains stop such a request at its next activity instead.
STAGE_END_STOPS_REQUESTS_PATCH = "stage-end-stops-requests"

PENDING = "pending"
DECISIONS = {"approve": "approved", "reject": "rejected", "request_changes": "changes_requested"}


@workflow.defn(name="ApprovalChain")
class ApprovalChainWorkflow(ApprovalSteps):
    @workflow.init
    def __init__(self, input: ApprovalChainInput) -> None:
        self._input = input
        self._steps: dict[str, ApprovalStep] = {}
        self._specs: dict[str, RequestSpec] = {}
        self._people: dict[str, PersonInfo] = {}
        self._changed: dict[str, int] = {}  # bumps wake a request's timer loop
        self._outcome = "running"
        self._current_stage: int | None = None
        self._predicted_finish: datetime | None = None
        self._withdrawal: Withdrawal | None = None
        self._final_by: str | None = None
        self._event_seq = 0
        self._final_comment: str | None = None
        self._retry = 0
        self._parked: ParkedFailure | None = None
        self._parks_open = 0
        # Request tasks whose stage ended: cancelled, and stopped at their next activity should
        # a completed activity swallow that cancellation (STAGE_END_STOPS_REQUESTS_PATCH).
        self._stopped: set[asyncio.Task[Any]] = set()
        for c in input.carried:
            self._steps[c.step_id] = ApprovalStep(
                step_id=c.step_id,
                stage=c.stage,
                mode=self._mode_of(c.stage),
                role=c.role,
                approver_email=c.approver_email,
                holder_email=c.approver_email,
                reason=c.reason,
                inputs_sha256=c.inputs_sha256,
                status="carried_over",
                decided_by=c.decided_by,
                decision="approve",
                decided_at=c.decided_at,
                comment=f"Carried over from version {c.from_version}: nothing this role reviews "
                "changed.",
                carried_from_version=c.from_version,
            )
        for stage in input.stages:
            for spec in stage.requests:
                self._specs[spec.step_id] = spec
                self._changed[spec.step_id] = 0
                self._steps[spec.step_id] = ApprovalStep(
                    step_id=spec.step_id,
                    stage=spec.stage,
                    mode=stage.mode,
                    role=spec.role,
                    approver_email=spec.approver_email,
                    holder_email=spec.approver_email,
                    reason=spec.reason,
                    inputs_sha256=spec.inputs_sha256,
                    status="planned",
                )

    @workflow.run
    async def run(self, input: ApprovalChainInput) -> ApprovalChainStatus:
        for stage in input.stages:
            if self._withdrawal is not None:
                break
            self._current_stage = stage.index
            outcome = await self._run_stage(stage)
            if outcome != "approved":
                self._outcome = outcome
                break
        else:
            self._outcome = "approved"
        if self._withdrawal is not None:
            self._outcome = "withdrawn"
        for step in self._steps.values():
            if step.status == "planned":  # a later stage the chain never reached
                step.status = "not_requested"
        self._current_stage = None
        # A decision's update handler may still be recording; let it answer its caller first.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _run_stage(self, stage: StageSpec) -> str:
        await self._predict_finish(stage)
        tasks = [asyncio.create_task(self._run_request(spec)) for spec in stage.requests]
        steps = [self._steps[s.step_id] for s in stage.requests]

        def decided() -> str | None:
            if self._withdrawal is not None:
                return "withdrawn"
            for step in steps:
                if step.status in ("rejected", "changes_requested"):
                    return step.status
            approved = [s.status == "approved" for s in steps]
            if (stage.mode == "any" and any(approved)) or all(approved):
                return "approved"
            return None

        await workflow.wait_condition(lambda: decided() is not None)
        outcome = decided()
        assert outcome is not None
        if workflow.patched(STAGE_END_STOPS_REQUESTS_PATCH):
            self._stopped.update(tasks)
        for task in tasks:
            task.cancel()
        # Collect them (a cancelled delivery raises); their outcome is already in the steps.
        await asyncio.gather(*tasks, return_exceptions=True)
        # Whatever is still pending in this stage is no longer needed: withdraw it visibly.
        for step in steps:
            if step.status in (PENDING, "planned"):
                await self._withdraw_step(step, self._withdrawal_reason(outcome))
        return outcome

    async def _run_request(self, spec: RequestSpec) -> None:
        """One request: assign, deliver, then remind and escalate until someone decides."""
        step = self._steps[spec.step_id]
        approver = await self._person(spec.approver_email)
        step.delegate_email = self._delegate_of(approver)
        step.requested_at = workflow.now()
        step.due_at = self._due(spec, step.requested_at, approver)
        step.status = PENDING
        await self._act(
            "open_request",
            ApprovalActivities.open_request,
            OpenRequestInput(
                deal_id=self._input.deal.deal_id,
                quote_version=self._input.quote_version,
                workflow_id=workflow.info().workflow_id,
                step=step,
            ),
        )
        if self._owner_is_delegate_of(approver):
            await self._event(
                step,
                "approval.delegation_refused",
                "workflow",
                {"to": approver.ooo_delegate_email, "reason": "the delegate owns this deal"},
            )
        if step.delegate_email:
            await self._event(
                step,
                "approval.delegated",
                spec.approver_email,
                {"to": step.delegate_email, "reason": "out of office at assignment"},
            )
        await self._deliver(step, "request")
        while step.status == PENDING:
            seen = self._changed[step.step_id]
            now = workflow.now()
            assert step.due_at is not None and step.requested_at is not None
            remind_at = step.requested_at + (step.due_at - step.requested_at) * spec.reminder_at
            # A reminder is owed until the SLA passes (late is better than never, e.g. after an
            # outage); past the SLA the escalation supersedes it.
            reminding = step.reminded_at is None and now < step.due_at
            wake_at = remind_at if reminding else step.due_at
            timeout = (wake_at - now).total_seconds()
            if timeout > 0:
                try:

                    def changed(seen: int = seen) -> bool:
                        return self._changed[step.step_id] != seen

                    await workflow.wait_condition(changed, timeout=timedelta(seconds=timeout))
                    continue  # decided, or reassigned: look again
                except TimeoutError:
                    pass
            if step.status != PENDING:
                break
            if reminding:
                step.reminded_at = workflow.now()
                await self._deliver(step, "reminder")
                await self._event(
                    step,
                    "approval.reminded",
                    "workflow",
                    {"to": step.delegate_email or step.holder_email},
                )
            elif step.escalation_level < self._input.options.escalation_levels:
                await self._escalate(step, spec)
            else:
                # Out of escalation levels: keep waiting for a decision, but tell the rep once.
                await self._notify_owner(
                    f"overdue/{step.step_id}",
                    f"Approval {spec.role_label} for {self._input.deal.name} is overdue and has "
                    f"no one left to escalate to (held by {step.holder_email}).",
                )
                step.due_at = None
                await workflow.wait_condition(lambda: step.status != PENDING)

    async def _escalate(self, step: ApprovalStep, spec: RequestSpec) -> None:
        holder = await self._person(step.holder_email)
        owner = self._input.deal.owner_email
        candidates = [holder.backup_email, holder.manager_email]
        # Never to the deal's owner: skip to the next in line.
        target_email = next((c for c in candidates if c and c != owner), None)
        if target_email is None:
            step.escalation_level = self._input.options.escalation_levels
            if owner in candidates:
                await self._owner_skipped(step, spec, "escalation")
            return
        target = await self._person(target_email)
        previous = step.holder_email
        step.escalation_level += 1
        step.holder_email = target.email
        step.escalated_to = target.email
        step.delegate_email = self._delegate_of(target)
        step.requested_at = workflow.now()
        step.due_at = self._due(spec, step.requested_at, target)
        step.reminded_at = None
        if owner in candidates[: candidates.index(target_email)]:
            await self._event(
                step,
                "approval.owner_skipped",
                "workflow",
                {"skipped": owner, "to": target.email, "reason": "the deal's owner"},
            )
        await self._event(
            step,
            "approval.escalated",
            "workflow",
            {
                "from": previous,
                "to": target.email,
                "level": step.escalation_level,
                "delegate": step.delegate_email,
            },
        )
        await self._deliver(step, f"escalation.{step.escalation_level}")

    # --- messages --------------------------------------------------------------------------

    @workflow.update
    async def decide(self, request: DecisionRequest) -> ApprovalStep:
        step = self._steps[request.step_id]
        # Two decisions accepted in the same workflow task both passed the validator; the first
        # handler to run wins and the second is refused here.
        self._check_pending(step)
        step.status = DECISIONS[request.decision]
        step.decision = request.decision
        step.decided_by = request.actor_email
        step.comment = request.comment
        step.decided_at = workflow.now()
        step.channel = request.channel
        self._changed[step.step_id] += 1
        if request.decision != "approve":
            self._final_by, self._final_comment = request.actor_email, request.comment
        await self._act(
            "record_decision",
            ApprovalActivities.record_decision,
            RecordDecisionInput(
                deal_id=self._input.deal.deal_id, step=step, summary=self._input.deal
            ),
        )
        return step

    @decide.validator
    def _validate_decide(self, request: DecisionRequest) -> None:
        step = self._steps.get(request.step_id)
        if step is None:
            raise ApplicationError(f"no approval step {request.step_id}", type="UnknownStep")
        if request.decision not in DECISIONS:
            raise ApplicationError(f"unknown decision {request.decision!r}", type="BadDecision")
        self._check_pending(step)
        if request.actor_email == self._input.deal.owner_email:
            raise ApplicationError(
                f"{request.actor_email} owns this deal and may not decide its approvals",
                type=OWNER_MAY_NOT_DECIDE,
            )
        allowed = {step.holder_email, step.delegate_email} - {None}
        if request.actor_email not in allowed:
            raise ApplicationError(
                f"{request.actor_email} may not decide this step; it is held by "
                f"{step.holder_email}"
                + (f" (delegated to {step.delegate_email})" if step.delegate_email else ""),
                type="NotAllowed",
            )

    @workflow.signal
    async def reassign(self, change: Reassignment) -> None:
        for step in self._steps.values():
            if step.status == PENDING and step.holder_email == change.approver_email:
                if step.delegate_email == change.delegate_email:
                    continue
                if change.delegate_email == self._input.deal.owner_email:
                    # The request stays with its holder; the refusal is on the record.
                    await self._event(
                        step,
                        "approval.delegation_refused",
                        change.approver_email,
                        {"to": change.delegate_email, "reason": "the delegate owns this deal"},
                    )
                    continue
                step.delegate_email = change.delegate_email
                self._changed[step.step_id] += 1
                await self._event(
                    step,
                    "approval.delegated",
                    change.approver_email,
                    {"to": change.delegate_email, "reason": change.reason},
                )
                await self._deliver(step, "delegation")

    @workflow.signal
    def withdraw(self, withdrawal: Withdrawal) -> None:
        self._withdrawal = withdrawal

    @workflow.signal
    def retry(self, by: str) -> None:
        """Run the activity (or activities) that gave up again."""
        self._retry += 1

    @workflow.query
    def status(self) -> ApprovalChainStatus:
        return ApprovalChainStatus(
            outcome=self._outcome,
            current_stage=self._current_stage,
            steps=sorted(self._steps.values(), key=lambda s: (s.stage, s.step_id)),
            predicted_finish=self._predicted_finish,
            decided_by=self._final_by,
            comment=self._final_comment,
            parked=self._parked,
        )

    # --- helpers ---------------------------------------------------------------------------

    def _mode_of(self, stage_index: int) -> str:
        for stage in self._input.stages:
            if stage.index == stage_index:
                return stage.mode
        return "all"

    def _check_pending(self, step: ApprovalStep) -> None:
        if step.status == PENDING:
            return
        if step.decided_by:
            raise ApplicationError(
                f"already decided by {step.decided_by} ({step.status})", type="AlreadyDecided"
            )
        raise ApplicationError(f"this step is {step.status}", type="NotPending")

    def _withdrawal_reason(self, outcome: str) -> str:
        if self._withdrawal is not None:
            return self._withdrawal.reason or f"cancelled by {self._withdrawal.by}"
        if outcome == "approved":
            return "no longer needed: the stage was approved"
        return f"no longer needed: the chain ended {outcome}"

    def _delegate_of(self, person: PersonInfo) -> str | None:
        """The out-of-office delegate, if any. Never a delegate of a delegate, never the owner."""
        if person.ooo_until and person.ooo_until > workflow.now() and person.ooo_delegate_email:
            if person.ooo_delegate_email == self._input.deal.owner_email:
                return None
            return person.ooo_delegate_email
        return None

    def _owner_is_delegate_of(self, person: PersonInfo) -> bool:
        return bool(
            person.ooo_until
            and person.ooo_until > workflow.now()
            and person.ooo_delegate_email == self._input.deal.owner_email
        )

    async def _owner_skipped(self, step: ApprovalStep, spec: RequestSpec, door: str) -> None:
        """Nobody but the owner is left to route to: record why and tell the rep's manager."""
        owner = await self._person(self._input.deal.owner_email)
        await self._event(
            step,
            "approval.owner_skipped",
            "workflow",
            {"skipped": owner.email, "to": None, "reason": f"{door}: only the deal's owner left"},
        )
        if owner.manager_email and owner.manager_email != owner.email:
            await self._act(
                "notify",
                ApprovalActivities.notify,
                NotifyInput(
                    recipient_email=owner.manager_email,
                    key=f"{workflow.info().workflow_id}/owner-skipped/{step.step_id}",
                    text=f"Approval {spec.role_label} for {self._input.deal.name} could only "
                    f"go to the deal's owner ({owner.email}), who may not decide it; it stays "
                    f"with {step.holder_email}. Please reassign it.",
                    deal_id=self._input.deal.deal_id,
                ),
            )
