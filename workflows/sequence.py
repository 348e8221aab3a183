"""SequenceWorkflow: one contact's walk through a campaign's steps, until done, reply or stop.

One per contact and campaign (id ``campaign/<campaign id>/contact/<email>``, see
``dealflow.ids``), started by the campaign's enrolment with id reuse rejected.

Signals:  ``reply(ReplyEvent)`` — an inbound message matched to this contact, classified; routed
          by ``REPLY_ROUTES``: an auto-reply pauses until the return date, everything else stops.
          ``delivery_event(DeliveryEvent)`` — a bounce or complaint for one of our messages: stop.
          ``contact_hold(ContactHold)`` — stop (unsubscribed) or pause until a time (a colleague
          at the same company replied).
          ``campaign_state(CampaignState)`` — the campaign was paused, resumed or cancelled;
          versioned, an older state never overrides a newer one.
          ``task_done(TaskDone)`` — the rep marked a LinkedIn or call task done.
          ``retry(RetryRequest | None)`` — ops: run the failed step of a parked sequence again
          (``POST /v1/campaigns/{id}/retry`` or ``…/contacts/{email}/retry``, or the Temporal
          UI with no input).
Queries:  ``status() -> SequenceStatus`` — step, next send time, history with reasons; state
          ``needs_attention`` and ``attention`` (what failed, why) while parked.

Failures: every activity retries within a budget (``SEND_RETRY``, ``NOTIFY_RETRY``, in
``workflows/sequence_calls.py``, which runs the activities, parks and records); one that
fails for good parks the sequence in ``needs_attention`` (status, the ``CampaignStatus`` search
attribute, the contact's row through ``record_attention``) until a retry runs that step again.
A stop or the campaign's cancel while parked makes the step moot: the sequence ends instead.
A retried send keeps its Message-ID, so the send's claim still makes it at most once.

The workflow never relies on hearing a signal in time to keep a promise: the webhooks write the
contact's hold, and the API the campaign's status, to PostgreSQL before they answer, and the send
activity checks both in the transaction that sends (see ``SequenceActivities.send_email``). The
signals make the workflow's own view (and its status query) catch up, and wake it.

Waits: each step waits ``wait_days`` window days from the previous step, then the next opening of
its window in the contact's time zone (``domain.schedule``). In test mode (input ``timing``) a
wait day lasts ``wait_day_seconds`` and windows are always open.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.sequence import SequenceActivities
    from dealflow.ids import message_id_for, task_id_for
    from domain.campaign_rules import reply_route
    from domain.schedule import next_send_time
    from domain.variants import assign_variant
    from messages.campaign import (
        ALWAYS_OPEN,
        Attention,
        CampaignState,
        CompleteTaskInput,
        ContactHold,
        CreateTaskInput,
        DeliveryEvent,
        NotifyRepInput,
        ReplyEvent,
        RetryRequest,
        RouteReplyInput,
        SendEmailInput,
        SendEmailResult,
        SentEmail,
        SequenceInput,
        SequenceStatus,
        StepPlan,
        TaskDone,
    )
    from workflows.campaign_retry import NOTIFY_RETRY

from workflows.sequence_calls import ABANDONED, ATTEMPT_RANGE, SequenceCalls, Stop


@workflow.defn(name="CampaignSequence")
class SequenceWorkflow(SequenceCalls):
    """One contact's sequence.

    Signals: ``reply``, ``delivery_event``, ``contact_hold``, ``campaign_state``, ``task_done``,
    ``retry``. Queries: ``status``. See the module docstring.
    """

    @workflow.init
    def __init__(self, input: SequenceInput) -> None:
        self._input = input
        self._campaign = input.state
        self._stop: Stop | None = None
        self._pause_until: datetime | None = None
        self._pause_reason: str | None = None
        self._changed = False
        self._tasks_done: dict[int, str] = {}
        self._thread_subject: str | None = None
        self._sent_ids: list[str] = []
        self._record_seq = 0
        self._parks: dict[int, Attention] = {}
        self._park_seq = 0
        self._retry_round = 0
        self._status = SequenceStatus(
            campaign_id=input.campaign_id,
            contact_email=input.contact_email,
            steps_total=len(input.steps),
            campaign_status=input.state.status,
        )
        if input.state.status == "cancelled":
            self._stop = Stop("the campaign was cancelled", "cancelled", "cancelled")

    # --- the process -----------------------------------------------------------------------

    @workflow.run
    async def run(self, input: SequenceInput) -> SequenceStatus:
        self._note("enrolled", None, f"{len(input.steps)} steps")
        for step in input.steps:
            if self._stop is not None:
                break
            await self._run_step(step)
        if self._stop is None:
            await self._completed()
            await self._await_late_replies()
        await self._close()
        # Reply routing runs in its signal handler; let it finish before the workflow does.
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    async def _run_step(self, step: StepPlan) -> None:
        self._status.step = step.index
        due = self._due(step)
        await self._scheduled(step, due)
        while True:
            self._status.state = "waiting"
            self._status.next_send_at = due
            await self._sleep_until(due)
            if self._stop is not None:
                return
            if self._held():
                await self._wait_out_hold(step)
                if self._stop is not None:
                    return
                due = max(due, self._reopen(step))  # determinism-ok: not file I/O
                continue
            if step.channel != "email":
                await self._run_task(step)
                return
            result = await self._send(step)
            if result is None:  # parked, then stopped: the loop's top ends the step
                continue
            if result.outcome == "sent":
                return
            if result.outcome == "deferred":
                assert result.retry_at is not None
                due = result.retry_at
                detail = f"sender's daily cap reached; moved to {due:%Y-%m-%d %H:%M} UTC"
                self._note("send.deferred", step.index, detail)
                await self._record(
                    "send.deferred", step.index, detail, status="waiting", next_send_at=due
                )
                continue
            if result.outcome == "held":
                self._pause(result.retry_at, result.reason or "paused")
                continue
            if result.outcome in ("campaign_paused", "campaign_cancelled"):
                assert result.state is not None
                self._adopt(result.state)
                due = workflow.now()
                continue
            # stopped: a hold the webhooks wrote, a suppression, a refused address
            self._note("send.refused", step.index, result.reason)
            self._stop_with(result.reason or "stopped", result.stop_outcome)
            return

    def _due(self, step: StepPlan) -> datetime:
        now = workflow.now()
        timing = self._input.timing
        if timing.test_mode:
            return now + timedelta(seconds=step.wait_days * timing.wait_day_seconds)
        return next_send_time(
            now, step.wait_days, step.window.window(), self._input.timezone, self._input.country
        )

    def _reopen(self, step: StepPlan) -> datetime:  # determinism-ok: a pure function
        """After a pause: the window's next opening from now (no new wait)."""
        if self._input.timing.test_mode:
            return workflow.now()
        return next_send_time(
            workflow.now(), 0, step.window.window(), self._input.timezone, self._input.country
        )

    async def _sleep_until(self, due: datetime) -> None:
        """Wait until ``due``; return early on a stop or a hold (the caller deals with them)."""
        while self._stop is None and not self._held():
            delay = (due - workflow.now()).total_seconds()
            if delay <= 0:
                return
            self._changed = False
            try:
                await workflow.wait_condition(lambda: self._changed, timeout=delay)
            except TimeoutError:
                return

    async def _wait_out_hold(self, step: StepPlan) -> None:
        """Wait while the campaign is paused or the contact's pause runs; resume or stop."""
        reason = self._hold_reason()
        self._status.state = "paused"
        self._status.campaign_status = self._campaign.status
        self._note("paused", step.index, reason)
        # A campaign-wide pause shows on the campaign; only a contact's own pause (an
        # out-of-office, a colleague's reply) is worth a write per contact.
        contact_level = self._campaign.status == "active"
        if contact_level:
            await self._record("paused", step.index, reason, status="paused")
        while self._stop is None and self._held():
            self._changed = False
            timeout = None
            if self._campaign.status == "active" and self._pause_until is not None:
                timeout = max(0.0, (self._pause_until - workflow.now()).total_seconds())
            try:
                await workflow.wait_condition(lambda: self._changed, timeout=timeout)
            except TimeoutError:
                pass
            if self._pause_until is not None and self._pause_until <= workflow.now():
                self._pause_until = None
                self._pause_reason = None
        if self._stop is None:
            self._status.paused_until = None
            self._status.pause_reason = None
            self._note("resumed", step.index, None)
            if contact_level:
                await self._record("resumed", step.index, None, status="active")

    async def _send(self, step: StepPlan) -> SendEmailResult | None:
        inp = self._input
        variant = (
            assign_variant(inp.campaign_id, inp.contact_email, step.index, step.variants)
            if step.variants
            else None
        )
        message_id = message_id_for(
            inp.campaign_id, inp.contact_email, step.index, inp.sender_email
        )
        self._status.state = "sending"
        result: SendEmailResult = await self._call(
            SequenceActivities.send_email,
            SendEmailInput(
                campaign_id=inp.campaign_id,
                contact_email=inp.contact_email,
                step_index=step.index,
                message_id=message_id,
                references=list(self._sent_ids),
                thread_subject=self._thread_subject,
                variant=variant,
                requested_at=workflow.now(),
                window=ALWAYS_OPEN if inp.timing.test_mode else step.window,
                timezone=inp.timezone,
                country=inp.country,
                attempt_base=ATTEMPT_RANGE * self._retry_round,
            ),
        )
        if result is ABANDONED:
            return None
        if result.state is not None:
            self._adopt(result.state)
        if result.outcome == "sent":
            self._sent_ids.append(message_id)
            self._thread_subject = self._thread_subject or result.subject
            self._status.sent.append(
                SentEmail(
                    step=step.index,
                    message_id=message_id,
                    subject=result.subject,
                    variant=variant,
                    at=result.sent_at,
                    unconfirmed=result.unconfirmed,
                )
            )
            self._status.next_send_at = None
            self._status.state = "waiting"
            detail = f"“{result.subject}”" + (f", variant {variant}" if variant else "")
            if result.unconfirmed:
                detail += " (unconfirmed: a worker stopped mid-send; never sent twice)"
            self._note("email.sent", step.index, detail)
        return result

    async def _run_task(self, step: StepPlan) -> None:
        """A LinkedIn or call task for the rep: done when they mark it, or at the timeout."""
        inp = self._input
        task_id = task_id_for(inp.campaign_id, inp.contact_email, step.index)
        timeout = timedelta(hours=step.task_timeout_hours)
        created = await self._call(
            SequenceActivities.create_task,
            CreateTaskInput(
                task_id=task_id,
                campaign_id=inp.campaign_id,
                contact_email=inp.contact_email,
                owner_email=inp.owner_email,
                kind=step.channel,
                step_index=step.index,
                due_at=workflow.now() + timeout,
            ),
        )
        if created is ABANDONED:
            return
        self._status.state = "waiting_task"
        self._note("task.created", step.index, created.title)
        await self._record("task.created", step.index, created.title, status="waiting")
        try:
            await workflow.wait_condition(
                lambda: step.index in self._tasks_done or self._stop is not None,
                timeout=timeout.total_seconds(),
            )
        except TimeoutError:
            pass
        status: Literal["done", "timed_out", "cancelled"]
        if step.index in self._tasks_done:
            status, detail = "done", f"marked done by {self._tasks_done[step.index]}"
        elif self._stop is not None:
            status, detail = "cancelled", f"sequence stopped: {self._stop.reason}"
        else:
            status, detail = "timed_out", f"not marked done within {step.task_timeout_hours:g} h"
        await self._call(
            SequenceActivities.complete_task,
            CompleteTaskInput(
                task_id=task_id,
                status=status,
                by=self._tasks_done.get(step.index),
                campaign_id=inp.campaign_id,
                contact_email=inp.contact_email,
            ),
        )
        self._status.state = "waiting"
        self._note(f"task.{status}", step.index, detail)
        await self._record(f"task.{status}", step.index, detail, status="active")

    async def _completed(self) -> None:
        window = self._input.timing.reply_window_seconds
        self._status.state = "awaiting_replies" if window > 0 else "completed"
        self._status.outcome = "completed"
        self._note("sequence.completed", None, "every step done")
        await self._record(
            "sequence.completed",
            None,
            "every step done",
            status="completed",
            outcome="completed",
            closed=window <= 0,
        )

    async def _await_late_replies(self) -> None:
        """Stay open a while after the last step, so a reply still reaches the routing."""
        window = self._input.timing.reply_window_seconds
        if window <= 0:
            return
        try:
            await workflow.wait_condition(lambda: self._stop is not None, timeout=window)
        except TimeoutError:
            pass

    async def _close(self) -> None:
        if self._stop is None:
            if self._input.timing.reply_window_seconds > 0:
                self._status.state = "completed"
                await self._record("sequence.closed", None, "reply window over", closed=True)
            return
        self._status.state = self._stop.status
        self._status.stop_reason = self._stop.reason
        self._status.outcome = self._stop.outcome or self._status.outcome
        self._status.next_send_at = None
        self._note(f"sequence.{self._stop.status}", self._status.step, self._stop.reason)
        await self._record(
            f"sequence.{self._stop.status}",
            self._status.step,
            self._stop.reason,
            status=self._stop.status,
            outcome=self._stop.outcome,
            closed=True,
        )

    # --- messages --------------------------------------------------------------------------

    @workflow.signal
    async def reply(self, event: ReplyEvent) -> None:
        route = reply_route(event.kind, event.bounce_type)
        detail = f"{event.kind} (rule {event.rule}) from {event.from_email}"
        self._note("reply.received", None, detail)
        if route.action == "pause":
            if self._stop is None:
                until = event.resume_at or workflow.now()
                why = f"out of office until {until:%Y-%m-%d %H:%M} UTC ({event.rule})"
                self._pause(until, why)
            return
        kind = event.kind.replace("_", " ")
        self._stop_with(f"replied: {kind} (rule {event.rule})", route.outcome)
        if not (route.notify or route.task or route.referral):
            return
        inp = self._input
        try:
            routed = await self._call(
                SequenceActivities.route_reply,
                RouteReplyInput(
                    inbound_id=event.inbound_id,
                    campaign_id=inp.campaign_id,
                    contact_email=inp.contact_email,
                    owner_email=inp.owner_email,
                    kind=event.kind,
                    create_task=route.task,
                    record_referral=route.referral,
                    notify=route.notify,
                ),
            )
            if routed is ABANDONED:
                return
            if routed.task_id:
                self._note("task.created", None, f"follow-up task {routed.task_id}")
            if routed.notification:
                told = await self._call(
                    SequenceActivities.notify_rep,
                    NotifyRepInput(
                        key=f"reply/{event.inbound_id}",
                        campaign_id=inp.campaign_id,
                        contact_email=inp.contact_email,
                        owner_email=inp.owner_email,
                        kind=event.kind,
                        text=routed.notification,
                    ),
                    retry=NOTIFY_RETRY,
                )
                if told is ABANDONED:
                    return
                self._note("rep.notified", None, f"{inp.owner_email} told in Slack")
        except ActivityError as err:
            # The stop stands; the rep's notification is recorded and can be re-sent by ops.
            self._note("rep.notify_failed", None, str(err.cause or err))

    @workflow.signal
    def delivery_event(self, event: DeliveryEvent) -> None:
        self._note(f"delivery.{event.type}", None, event.reason)
        outcome = "complained" if event.type == "complaint" else "bounced"
        self._stop_with(event.reason, outcome)

    @workflow.signal
    def contact_hold(self, hold: ContactHold) -> None:
        if hold.kind == "stop":
            self._note("stop.requested", None, hold.reason)
            self._stop_with(hold.reason, hold.outcome)
        elif self._stop is None and hold.until is not None:
            self._pause(hold.until, hold.reason)

    @workflow.signal
    def campaign_state(self, state: CampaignState) -> None:
        self._adopt(state)

    @workflow.signal
    def task_done(self, done: TaskDone) -> None:
        self._tasks_done.setdefault(done.step_index, done.by)
        self._changed = True

    @workflow.signal
    def retry(self, request: RetryRequest | None = None) -> None:
        """Ops: run the failed step(s) again (ignored unless the sequence is parked)."""
        if self._parks:
            self._retry_round += 1
            by = request.by if request and request.by else "ops"
            self._note("retry.requested", self._status.step, f"by {by}")

    @workflow.query
    def status(self) -> SequenceStatus:
        if not self._parks:
            return self._status
        first = next(iter(self._parks.values()))
        return self._status.model_copy(update={"state": "needs_attention", "attention": first})

    # --- helpers ---------------------------------------------------------------------------

    def _adopt(self, state: CampaignState) -> None:
        if state.version <= self._campaign.version:
            return
        self._campaign = state
        self._status.campaign_status = state.status
        self._note(f"campaign.{state.status}", None, state.reason)
        if state.status == "cancelled" and self._stop is None:
            self._stop = Stop("the campaign was cancelled", "cancelled", "cancelled")
        self._changed = True

    def _pause(self, until: datetime | None, reason: str) -> None:
        if until is None or until <= workflow.now():
            return
        self._pause_until = max(until, self._pause_until) if self._pause_until else until
        self._pause_reason = reason
        self._status.paused_until = self._pause_until
        self._status.pause_reason = reason
        self._changed = True

    def _stop_with(self, reason: str, outcome: str | None) -> None:
        if self._stop is None:
            self._stop = Stop(reason, outcome)
        self._changed = True

    def _held(self) -> bool:
        if self._campaign.status not in ("active", "cancelled"):
            return True
        return self._pause_until is not None and self._pause_until > workflow.now()

    def _hold_reason(self) -> str:
        if self._campaign.status not in ("active", "cancelled"):
            return f"campaign {self._campaign.status}" + (
                f": {self._campaign.reason}" if self._campaign.reason else ""
            )
        return self._pause_reason or "paused"

    async def _scheduled(self, step: StepPlan, due: datetime) -> None:
        self._status.next_send_at = due
        self._status.state = "waiting"
        what = "email" if step.channel == "email" else step.channel.replace("_", " ")
        self._note("step.scheduled", step.index, f"{what} due {due:%Y-%m-%d %H:%M} UTC")
        # Only a real wait is worth a database write: zero waits go straight to the send.
        if (due - workflow.now()).total_seconds() >= 1:
            detail = f"{what} due {due.isoformat()}"
            await self._record(
                "step.scheduled", step.index, detail, status="waiting", next_send_at=due
            )
