"""HandoffWorkflow: from closed-won to a customer in onboarding, then the renewal alerts.

One per won deal (id ``handoff/<deal id>``, see ``dealflow.ids``), started by the closure once
closed-won is recorded (``HandoffActivities.start_handoff``); the deal's stage is ``handoff``.

Signals:  ``details_updated(int)`` — the rep or CSM supplied package fields (PATCH); a handoff
          waiting in ``needs_attention`` builds the package again.
          ``item_done(ItemDone)`` — an onboarding item was marked done (the API has already
          written the row; this stops its reminder and escalation).
          ``retry(by: str)`` — run the activity that parked the handoff again
          (``POST /v1/handoffs/{deal}/retry`` or the Temporal UI).
Updates:  ``reassign(Reassign) -> HandoffStatus`` — another CSM (the CS lead, admin); a handoff
          waiting for a CSM goes on, open items of the old CSM move to the new one.
          ``cancel(CancelHandoff) -> HandoffStatus`` — ops or an admin end the handoff
          (``POST /v1/handoffs/{deal}/cancel``); refused (``HandoffEnded``) once cancelled.
Queries:  ``status() -> HandoffStatus`` — what ``GET /v1/handoffs/{deal}`` shows.

Statuses: collecting -> (needs_attention while a required field or the CSM is missing) ->
kickoff_scheduled -> onboarding -> live (every item done). Reminders, escalations and the renewal
alerts are durable timers in one loop; the workflow continues as new before the long wait for
the renewal alerts and after each alert, so its history stays small for a multi-year term. It
ends after the last alert once no open item has a reminder or escalation to come.

Parking (``handoff-park-and-retry``): an activity that spent its ``RetryBudget`` or failed with
an error no retry fixes parks the handoff in ``needs_attention`` (``parked`` says which and why)
until ``retry``; then only it runs again, and the status it had comes back. That plumbing
(``_act``, the park, statuses and the timeline) is in ``workflows/handoff_steps.py``.

Cancel — what cancels a handoff: only ops or an admin, with a reason, when the customer success
work must stop although the deal stays won (a rescinded contract, a deal won in error). From any
status while the workflow runs (waiting, parked, onboarding, live with renewal alerts to come):
the running activity or park is interrupted, every open task of the deal is closed
(``cancel_tasks``: items and renewal alerts ``cancelled``), the reason goes in the timeline, and
the workflow ends ``cancelled`` (no timer is left).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.handoff import HandoffActivities
    from activities.onboarding import OnboardingActivities
    from dealflow.ids import HANDOFF_WORKFLOW
    from messages.handoff import (
        AlertView,
        AssignInput,
        AssignResult,
        CancelHandoff,
        CancelTasksInput,
        CsmView,
        HandoffInput,
        HandoffStatus,
        ItemDone,
        ItemView,
        KickoffInput,
        KickoffView,
        LearningInput,
        LoadPackageInput,
        MessageInput,
        MoveItemsInput,
        PackageResult,
        PlanInput,
        PlanResult,
        Reassign,
        RenewalInput,
        RenewalView,
        TaskUpdate,
        WinInput,
    )

from workflows.handoff_steps import HandoffCancelled, HandoffSteps, add_closure_facts

# Before this patch the workflow ended at the last renewal alert, even with items still open
# whose reminder or escalation was yet to come; new ones wait for those first.
FOLLOW_UP_PATCH = "handoff-items-after-last-alert"


@workflow.defn(name=HANDOFF_WORKFLOW)
class HandoffWorkflow(HandoffSteps):
    @workflow.init
    def __init__(self, input: HandoffInput) -> None:
        self._input = input
        self._s = input.state or HandoffStatus(deal_id=input.deal_id, owner_email=input.owner_email)
        self._details_revision = 0
        self._changed = False  # a signal or update arrived: the loop looks again
        self._did_work = False  # this run sent something: continuing as new is worth it
        self._retry = 0  # retry signals so far; a park waits for one more
        self._retry_by: str | None = None
        self._cancel: CancelHandoff | None = None
        self._finishing = False  # ending cancelled: nothing interrupts that

    @workflow.run
    async def run(self, input: HandoffInput) -> HandoffStatus:
        try:
            if input.state is None:
                await self._collect_and_kick_off()
            else:
                self._note("run.continued", f"run {self._s.run}")
            return await self._follow_up()
        except HandoffCancelled:
            return await self._end_cancelled()

    # --- collecting, CSM, kickoff ------------------------------------------------------------

    async def _collect_and_kick_off(self) -> None:
        s = self._s
        s.close_date = workflow.now().date()
        await self._set_status("collecting", None)
        pkg = await self._load()
        s.customer = pkg.customer
        billing = pkg.package["billing"]
        await self._act(
            HandoffActivities.post_win,
            WinInput(
                key=f"{s.deal_id}/win",
                deal_id=s.deal_id,
                text=f":tada: {pkg.customer} signed: {billing['total']} {billing['currency']}, "
                f"{pkg.term_months} months, won by {s.owner_email} ({s.deal_id}).",
            ),
        )
        await self._act(
            HandoffActivities.record_won, LearningInput(deal_id=s.deal_id, at=workflow.now())
        )
        self._note("win.announced", None)
        while pkg.missing:
            s.missing = pkg.missing
            await self._set_status("needs_attention", "; ".join(m["message"] for m in pkg.missing))

            def details_changed(seen: int = pkg.details_revision) -> bool:
                return self._details_revision > seen or self._cancel is not None

            await workflow.wait_condition(details_changed)
            self._checkpoint()
            self._note("details.updated", f"revision {self._details_revision}")
            await self._set_status("collecting", None)
            pkg = await self._load()
        s.missing = []
        if s.csm is None:
            assigned: AssignResult = await self._act(
                HandoffActivities.assign_csm,
                AssignInput(
                    deal_id=s.deal_id,
                    segment=pkg.segment,
                    region=pkg.region,
                    industry=pkg.industry,
                    customer=pkg.customer,
                ),
            )
            if assigned.csm_email is None:
                s.missing = [{"field": "csm", "message": assigned.reason}]
                self._note("csm.none_fits", f"{assigned.reason}; task {assigned.lead_task_id}")
                await self._set_status("needs_attention", f"No CSM: {assigned.reason}")
                await workflow.wait_condition(
                    lambda: self._s.csm is not None or self._cancel is not None
                )
                self._checkpoint()
                s.missing = []
            else:
                s.csm = CsmView(
                    email=assigned.csm_email,
                    reason=assigned.reason,
                    alternatives=[a.model_dump() for a in assigned.alternatives],
                    manager_email=assigned.manager_email,
                )
                self._note("csm.assigned", f"{assigned.csm_email}: {assigned.reason}")
        assert s.csm is not None
        await self._deliver_package(pkg)
        plan: PlanResult = await self._act(
            OnboardingActivities.plan_onboarding,
            PlanInput(
                deal_id=s.deal_id,
                segment=pkg.segment,
                close_date=s.close_date,
                timezone=pkg.timezone,
                holiday_country=pkg.holiday_country,
                csm_email=s.csm.email,
                rep_email=s.owner_email,
                customer_email=pkg.primary_contact.email if pkg.primary_contact else None,
                term_end=pkg.term_end,
                timing=self._input.timing,
            ),
        )
        attendees = [c.email for c in pkg.contacts if c.email] + [s.csm.email, s.owner_email]
        attendees = list(dict.fromkeys(attendees))  # once each, in order
        s.kickoff = KickoffView(
            at=plan.kickoff_start, end=plan.kickoff_end, attendees=attendees, timezone=pkg.timezone
        )
        await self._act(
            HandoffActivities.send_kickoff,
            KickoffInput(
                key=f"{s.deal_id}/kickoff",
                deal_id=s.deal_id,
                customer=pkg.customer,
                organizer_email=s.csm.email,
                attendees=attendees,
                start=plan.kickoff_start,
                end=plan.kickoff_end,
                timezone=pkg.timezone,
            ),
        )
        s.kickoff.invite_sent_at = workflow.now()
        self._note("kickoff.invited", f"{plan.kickoff_start.isoformat()} ({pkg.timezone})")
        s.items = [
            ItemView(**i.model_dump(exclude={"key", "owner_kind", "status"}), key=i.key)
            for i in plan.items
        ]
        s.renewal = RenewalView(
            term_end=pkg.term_end,
            alerts=[AlertView(days_before=d, due_at=at) for d, at in plan.alerts],
        )
        await self._set_status("kickoff_scheduled", None)
        await self._set_status("onboarding", None)

    async def _load(self) -> PackageResult:
        close_date = self._s.close_date
        assert close_date is not None  # set as the handoff starts
        pkg: PackageResult = await self._act(
            HandoffActivities.load_package,
            LoadPackageInput(deal_id=self._s.deal_id, close_date=close_date),
        )
        self._details_revision = max(self._details_revision, pkg.details_revision)
        add_closure_facts(pkg.package, self._input.closure)
        self._s.package = pkg.package
        return pkg

    async def _deliver_package(self, pkg: PackageResult) -> None:
        """Customer success gets the whole package; finance and support their part."""
        s = self._s
        assert s.csm is not None
        cs = self._input.closure
        context = {
            "deal_id": s.deal_id,
            "package": pkg.package,
            "csm": s.csm.email,
            "rep": s.owner_email,
            "documents": cs.get("documents", []),
            "approvals": cs.get("approval_steps", []),
        }
        for part, to, subject in (
            ("package", [s.csm.email], f"Handoff: {pkg.customer} is yours"),
            ("finance", ["finance"], f"New customer for billing: {pkg.customer}"),
            ("support", ["support"], f"New customer for support: {pkg.customer}"),
        ):
            await self._act(
                HandoffActivities.send_message,
                MessageInput(
                    key=f"{s.deal_id}/package/{part}",
                    deal_id=s.deal_id,
                    to=to,
                    subject=subject,
                    template=f"handoff/{part}.txt.j2",
                    context=context,
                ),
            )
        self._note("package.delivered", "customer success, finance, support")

    # --- reminders, escalations, renewal ------------------------------------------------------

    async def _follow_up(self) -> HandoffStatus:
        s = self._s
        while True:
            now = workflow.now()
            for item in s.items:
                if item.done_at is not None:
                    continue
                if item.reminded_at is None and now >= item.remind_at:
                    await self._notice(
                        f"item/{item.id}/reminder",
                        [item.owner_email],
                        f"Reminder: {item.title} is due {item.due_at:%Y-%m-%d %H:%M} UTC",
                        f"Onboarding item for {s.customer}: {item.title}.",
                    )
                    item.reminded_at = now
                    await self._act(
                        OnboardingActivities.update_task,
                        TaskUpdate(task_id=item.id, reminded_at=now),
                    )
                    self._note("item.reminded", f"{item.key} -> {item.owner_email}")
                if item.escalated_to is None and now >= item.due_at:
                    item.status = "overdue"
                    assert s.csm is not None
                    # The owner's manager; a customer's item goes to the CSM; the CSM's own
                    # item to the CSM's manager; with nobody above, the CSM.
                    target = item.escalate_to or s.csm.manager_email or s.csm.email
                    await self._notice(
                        f"item/{item.id}/escalation",
                        [target],
                        f"Overdue: {item.title} ({item.owner_email}, {s.customer})",
                        f"Onboarding item for {s.customer} owned by {item.owner_email} was "
                        f"due {item.due_at:%Y-%m-%d %H:%M} UTC and is still open.",
                    )
                    item.escalated_to = target
                    await self._act(
                        OnboardingActivities.update_task,
                        TaskUpdate(task_id=item.id, escalated_to=target),
                    )
                    self._note("item.escalated", f"{item.key} -> {target}")
            if s.status == "onboarding" and all(i.done_at is not None for i in s.items):
                await self._set_status("live", "every onboarding item is done")
            assert s.renewal is not None
            for alert in s.renewal.alerts:
                if alert.sent_at is None and now >= alert.due_at:
                    await self._renewal_alert(alert)
                    if any(a.sent_at is None for a in s.renewal.alerts):
                        return await self._continue_as_new()
            if all(a.sent_at is not None for a in s.renewal.alerts) and not (
                self._items_pending() and workflow.patched(FOLLOW_UP_PATCH)
            ):
                await self._handlers_finished()
                return s
            pending = [a.due_at for a in s.renewal.alerts if a.sent_at is None]
            for item in s.items:
                if item.done_at is None:
                    if item.reminded_at is None:
                        pending.append(item.remind_at)
                    if item.escalated_to is None:
                        pending.append(item.due_at)
            wake = min(pending)
            only_renewal = all(i.done_at is not None or i.escalated_to is not None for i in s.items)
            if self._did_work and only_renewal or self._history_too_long():
                # Months until the next alert: start a fresh history with the state carried.
                return await self._continue_as_new()
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._changed or self._cancel is not None,
                    timeout=max(wake - now, timedelta(milliseconds=1)),
                )
            except TimeoutError:
                pass
            self._checkpoint()

    def _items_pending(self) -> bool:
        """An open item still has its reminder or its escalation to come."""
        return any(
            i.done_at is None and (i.reminded_at is None or i.escalated_to is None)
            for i in self._s.items
        )

    async def _renewal_alert(self, alert: AlertView) -> None:
        s = self._s
        assert s.renewal is not None and s.csm is not None
        first = all(a.sent_at is None for a in s.renewal.alerts)
        text = (
            f"{s.customer}'s term ends on {s.renewal.term_end.isoformat()}, in "
            f"{alert.days_before} days: time to work on the renewal."
        )
        subject = f"Renewal in {alert.days_before} days: {s.customer}"
        await self._notice(
            f"renewal/{alert.days_before}", [s.csm.email, s.owner_email], subject, text
        )
        await self._act(
            OnboardingActivities.renewal_alert_task,
            MessageInput(
                key=f"renewal-{alert.days_before}",
                deal_id=s.deal_id,
                to=[s.csm.email, s.owner_email],
                subject=subject,
                template="handoff/notice.txt.j2",
                context={"detail": text, "deal_id": s.deal_id},
            ),
        )
        if first and s.renewal.crm_renewal_id is None:
            billing = (s.package or {}).get("billing", {})
            s.renewal.crm_renewal_id = await self._act(
                OnboardingActivities.open_crm_renewal,
                RenewalInput(
                    deal_id=s.deal_id,
                    name=s.customer or s.deal_id,
                    amount=billing.get("total", "0"),
                    currency=billing.get("currency", "USD"),
                    term_end=s.renewal.term_end,
                ),
            )
            self._note("renewal.crm_opened", s.renewal.crm_renewal_id)
        alert.sent_at = workflow.now()
        self._note("renewal.alerted", f"{alert.days_before} days before {s.renewal.term_end}")

    async def _notice(self, key: str, to: list[str], subject: str, text: str) -> None:
        await self._act(
            HandoffActivities.send_message,
            MessageInput(
                key=f"{self._s.deal_id}/{key}",
                deal_id=self._s.deal_id,
                to=to,
                subject=subject,
                template="handoff/notice.txt.j2",
                context={"detail": text, "deal_id": self._s.deal_id},
            ),
        )
        self._did_work = True

    async def _continue_as_new(self) -> HandoffStatus:
        await self._handlers_finished()
        self._s.run += 1
        self._s.timeline = self._s.timeline[-50:]  # the recent past; the audit trail has it all
        workflow.continue_as_new(
            HandoffInput(
                deal_id=self._input.deal_id,
                owner_email=self._input.owner_email,
                closure={},  # used before the first continue-as-new only
                timing=self._input.timing,
                state=self._s,
            )
        )

    # --- messages ------------------------------------------------------------------------------

    @workflow.signal
    def details_updated(self, revision: int) -> None:
        self._details_revision = max(self._details_revision, revision)

    @workflow.signal
    def retry(self, by: str) -> None:
        """Ops fixed what made an activity give up; run it again (``POST .../retry``)."""
        self._retry += 1
        self._retry_by = by
        self._note("retry", f"requested by {by}")

    @workflow.update
    async def cancel(self, request: CancelHandoff) -> HandoffStatus:
        """End the handoff ``cancelled``: every timer stops, open items and alerts close."""
        self._cancel = request
        await workflow.wait_condition(lambda: self._s.status == "cancelled")
        return self._s

    @cancel.validator
    def _validate_cancel(self, request: CancelHandoff) -> None:
        if self._s.status == "cancelled" or self._cancel is not None:
            raise ApplicationError("the handoff is already cancelled", type="HandoffEnded")

    @workflow.signal
    def item_done(self, done: ItemDone) -> None:
        for item in self._s.items:
            if item.id == done.item_id and item.done_at is None:
                item.status, item.done_at, item.done_by = "done", done.at, done.by
                self._note("item.done", f"{item.key} by {done.by}")
                self._changed = True

    @workflow.update
    async def reassign(self, request: Reassign) -> HandoffStatus:
        s = self._s
        assigned: AssignResult = await self._act(
            HandoffActivities.assign_csm,
            AssignInput(
                deal_id=s.deal_id,
                segment="",
                region="",
                industry=None,
                customer=s.customer or "",
                csm_email=request.csm_email,
                reason=request.reason,
                by=request.by,
            ),
            park=False,
        )
        old = s.csm.email if s.csm else None
        assert assigned.csm_email is not None
        s.csm = CsmView(
            email=assigned.csm_email,
            reason=assigned.reason,
            alternatives=s.csm.alternatives if s.csm else [],
            manager_email=assigned.manager_email,
        )
        if old and old != assigned.csm_email:
            await self._act(
                OnboardingActivities.move_items,
                MoveItemsInput(deal_id=s.deal_id, from_email=old, to_email=assigned.csm_email),
                park=False,
            )
            for item in s.items:
                if item.owner_email == old and item.done_at is None:
                    item.owner_email = assigned.csm_email
        self._note("csm.reassigned", f"{old} -> {assigned.csm_email}: {request.reason}")
        await self._mirror(park=False)
        self._changed = True
        return s

    @reassign.validator
    def _validate_reassign(self, request: Reassign) -> None:
        if self._s.status in ("live", "cancelled") or self._cancel is not None:
            raise ApplicationError(f"the handoff is {self._s.status}", type="HandoffEnded")

    @workflow.query
    def status(self) -> HandoffStatus:
        return self._s

    # --- the end of a cancelled handoff --------------------------------------------------------

    async def _end_cancelled(self) -> HandoffStatus:
        """Close every open item and renewal alert, record why, end ``cancelled``."""
        s = self._s
        request = self._cancel
        assert request is not None
        self._finishing = True
        s.parked = None
        s.cancelled_by = request.by
        closed: list[str] = await self._act(
            OnboardingActivities.cancel_tasks,
            CancelTasksInput(deal_id=s.deal_id, reason=request.reason, by=request.by),
        )
        for item in s.items:
            if item.done_at is None:
                item.status = "cancelled"
        self._note(
            "handoff.cancelled", f"by {request.by}: {request.reason} ({len(closed)} tasks closed)"
        )
        await self._set_status("cancelled", request.reason)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return s
