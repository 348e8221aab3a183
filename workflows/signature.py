"""SignatureWorkflow: one DocuSign envelope for a quote version, tracked until it ends.

A child of the deal closure (id ``signature/<deal id>/v<version>``). The customer's signers sign
in their routing order, then our countersigner.

Signals:  ``connect_event(ConnectEvent)`` — a DocuSign Connect message (verified by the API).
          Treated as a hint: duplicates are dropped, and the envelope is re-read with a GET, so
          an event out of order can never move a recipient or the envelope backwards.
          ``offline_signed(OfflineSignature)`` — the rep uploaded a wet-signed PDF: the envelope
          is voided and the signature completes with method ``wet``.
          ``withdraw(SignatureWithdrawal)`` — the deal was cancelled: the envelope is voided.
          ``retry(by: str)`` — run the DocuSign call that gave up again (the closure forwards
          its retry here; ops may also send it from the Temporal UI).
Queries:  ``status() -> SignatureStatus`` (``parked`` while a call waits for a retry).

A hint that arrives while the envelope is being re-read causes another re-read: the loop
compares the hints received with those received before the last read started, not after it.

Failures: a DocuSign call that gives up (``DocuSignRejected``, or its budget spent) parks the
tracking and tells the closure (``child_parked``), which shows ``needs_attention``; a withdrawal
or an offline signature ends a park on a read without a retry. See ``workflows/parking.py``.

Timers: a polling fallback (DocuSign asks for no more than one poll per envelope every 15
minutes) catches lost webhooks; reminders (resend) to signers who have not signed; an alert to
the rep when nobody has opened the envelope; expiry, which voids it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.approvals import ApprovalActivities
    from activities.signature import SignatureActivities
    from domain.schedule import add_business_hours
    from messages.approval import NotifyInput
    from messages.parking import ChildPark, ParkedFailure, RetryBudget
    from messages.signature import (
        RECIPIENT_RANK,
        ConnectEvent,
        EnvelopeState,
        OfflineSignature,
        RecipientView,
        ResendInput,
        SendEnvelopeInput,
        SignatureInput,
        SignatureStatus,
        SignatureWithdrawal,
        StoreSignedInput,
        VoidInput,
    )
    from workflows.parking import cancelled, parked_failure, worker_loss_timeout

# DocuSign calls: retried patiently (their API has rate limits and brief outages), at twice the
# closure's intervals: with the default budget 2 s doubling to 2 min, 10 attempts over about 8
# minutes (2+4+8+16+32+64+120+120+120 s) — past a rate-limit window and a short outage. Then,
# or on a refusal of our envelope (non-retryable), the tracking parks and the closure shows it.
NON_RETRYABLE = ["DocuSignRejected"]
DOCUSIGN_SCALE = 2.0
DOCUSIGN_RETRY: RetryPolicy = RetryBudget().policy(
    non_retryable=NON_RETRYABLE, scale=DOCUSIGN_SCALE
)
# Replay safety: trackings recorded before this compared hints after the re-read (and lost one
# arriving during it); they keep doing so.
HINT_DURING_READ_PATCH = "signature-hint-during-read"


_INTERRUPTED = object()  # what _act returns when a withdrawal or offline signature ended a park


@workflow.defn(name="SignatureTracking")
class SignatureWorkflow:
    @workflow.init
    def __init__(self, input: SignatureInput) -> None:
        self._input = input
        self._status = SignatureStatus()
        self._seen: set[str] = set()
        self._hints = 0
        self._hints_read = 0  # hints received when the last re-read started
        self._offline: OfflineSignature | None = None
        self._withdrawal: SignatureWithdrawal | None = None
        self._retry = 0

    @workflow.run
    async def run(self, input: SignatureInput) -> SignatureStatus:
        t = input.timing
        envelope_id = await self._act(
            "send_envelope",
            SignatureActivities.send_envelope,
            SendEnvelopeInput(
                deal_id=input.deal_id,
                quote_version=input.quote_version,
                email_subject=f"Please sign: {input.deal_name}",
                documents=input.documents,
                signers=input.signers,
            ),
            interruptible=True,
        )
        if envelope_id is _INTERRUPTED:
            # Withdrawn, or signed offline, while the send was parked: no envelope to track.
            if self._offline is not None:
                self._status.status, self._status.method = "completed", "wet"
                self._status.documents = [self._offline.document]
            else:
                self._status.status = "voided"
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._status
        assert isinstance(envelope_id, str)
        self._status.envelope_id = envelope_id
        self._status.method = "docusign"
        started = workflow.now()
        expires_at = started + timedelta(seconds=t.expire_seconds)
        next_reminder = self._reminder_after(started)
        alert_at = started + timedelta(seconds=t.not_opened_alert_seconds)
        alerted = False
        await self._reconcile()
        while self._status.status not in ("completed", "declined", "voided", "expired"):
            now = workflow.now()
            wake = min(now + timedelta(seconds=t.poll_seconds), next_reminder, expires_at)
            if not alerted:
                wake = min(wake, alert_at)
            # Hints are counted from the start of the last re-read, so one that came during it
            # wakes us at once (another re-read) instead of waiting for the next poll.
            seen = self._hints_read if workflow.patched(HINT_DURING_READ_PATCH) else self._hints
            try:

                def woken(seen: int = seen) -> bool:
                    return (
                        self._hints != seen
                        or self._offline is not None
                        or self._withdrawal is not None
                    )

                await workflow.wait_condition(
                    woken, timeout=max(wake - now, timedelta(milliseconds=1))
                )
            except TimeoutError:
                self._status.polls += 1
            if self._withdrawal is not None:
                await self._void(self._withdrawal.reason)
                self._status.status = "voided"
                break
            if self._offline is not None:
                await self._void("Signed offline: a wet-signed copy was uploaded")
                self._status.status = "completed"
                self._status.method = "wet"
                self._status.documents = [self._offline.document]
                break
            await self._reconcile()
            if self._status.status in ("completed", "declined", "voided"):
                break
            now = workflow.now()
            if now >= expires_at:
                await self._void("Expired: not signed in time")
                self._status.status = "expired"
                break
            if not alerted and now >= alert_at:
                alerted = True
                if not any(RECIPIENT_RANK.get(r.status, 0) >= 2 for r in self._status.recipients):
                    await self._notify(
                        "not-opened",
                        f"Nobody has opened the contract for {input.deal_name} yet "
                        f"(envelope {self._status.envelope_id}).",
                    )
            if now >= next_reminder:
                await self._remind()
                next_reminder = self._reminder_after(now)
        if self._status.status == "completed" and self._status.method == "docusign":
            self._status.documents = await self._act(
                "store_signed_documents",
                SignatureActivities.store_signed_documents,
                StoreSignedInput(
                    deal_id=input.deal_id,
                    quote_version=input.quote_version,
                    envelope_id=self._status.envelope_id,
                ),
            )
        if self._status.status == "declined":
            await self._notify(
                "declined",
                f"The contract for {input.deal_name} was declined: "
                f"{self._status.declined_reason or 'no reason given'}",
            )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._status

    # --- messages --------------------------------------------------------------------------

    @workflow.signal
    def connect_event(self, event: ConnectEvent) -> None:
        self._status.events_received += 1
        if event.key in self._seen:
            self._status.duplicates_dropped += 1
            return
        self._seen.add(event.key)
        self._hints += 1

    @workflow.signal
    def offline_signed(self, signature: OfflineSignature) -> None:
        if self._status.status not in ("completed", "voided", "expired"):
            self._offline = signature

    @workflow.signal
    def withdraw(self, withdrawal: SignatureWithdrawal) -> None:
        self._withdrawal = withdrawal

    @workflow.signal
    def retry(self, by: str) -> None:
        """Run the DocuSign call that gave up again."""
        self._retry += 1

    @workflow.query
    def status(self) -> SignatureStatus:
        return self._status

    # --- helpers ---------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Read the envelope and apply what moved forward; nothing ever moves back."""
        self._hints_read = self._hints
        state = await self._act(
            "envelope_state",
            SignatureActivities.envelope_state,
            self._status.envelope_id,
            interruptible=True,
        )
        if state is _INTERRUPTED:  # withdrawn or signed offline while parked: the loop handles it
            return
        assert isinstance(state, EnvelopeState)
        self._status.reads += 1
        known = {r.email: r for r in self._status.recipients}
        views = []
        for r in sorted(state.recipients, key=lambda r: (r.routing_order, r.recipient_id)):
            before = known.get(r.email)
            status = r.status
            if before and RECIPIENT_RANK.get(before.status, 0) > RECIPIENT_RANK.get(status, 0):
                status = before.status
            at = r.declined_at or r.signed_at or r.delivered_at or (before.at if before else None)
            views.append(
                RecipientView(
                    recipient_id=r.recipient_id,
                    email=r.email,
                    name=r.name,
                    routing_order=r.routing_order,
                    status=status,
                    at=at,
                    declined_reason=r.declined_reason,
                )
            )
            if r.status == "declined":
                self._status.declined_reason = r.declined_reason
        self._status.recipients = views
        order = ["creating", "sent", "delivered", "completed"]
        if state.status in ("declined", "voided"):
            self._status.status = state.status
        elif state.status in order and order.index(state.status) > order.index(
            self._status.status if self._status.status in order else "creating"
        ):
            self._status.status = state.status

    async def _remind(self) -> None:
        pending = [r for r in self._status.recipients if RECIPIENT_RANK.get(r.status, 0) < 3]
        if not pending:
            return
        # Only the signers whose turn it is (the lowest routing order not yet signed).
        turn = min(r.routing_order for r in pending)
        ids = [
            r.recipient_id
            for r in self._status.recipients
            if r.routing_order == turn and RECIPIENT_RANK.get(r.status, 0) < 3
        ]
        sent = await self._act(
            "resend_envelope",
            SignatureActivities.resend_envelope,
            ResendInput(
                envelope_id=self._envelope_id(),
                recipient_ids=ids,
                deal_id=self._input.deal_id,
            ),
            interruptible=True,
        )
        if sent is not _INTERRUPTED:
            self._status.reminders_sent += 1

    def _envelope_id(self) -> str:
        assert self._status.envelope_id is not None  # read or reminded only once it exists
        return self._status.envelope_id

    async def _void(self, reason: str) -> None:
        await self._act(
            "void_envelope",
            SignatureActivities.void_envelope,
            VoidInput(envelope_id=self._envelope_id(), reason=reason, deal_id=self._input.deal_id),
        )

    async def _notify(self, key: str, text: str) -> None:
        await self._act(
            "notify",
            ApprovalActivities.notify,
            NotifyInput(
                recipient_email=self._input.owner_email,
                key=f"{workflow.info().workflow_id}/{key}",
                text=text,
                deal_id=self._input.deal_id,
            ),
        )

    # --- park and retry --------------------------------------------------------------------

    async def _act(
        self,
        name: str,
        method: Callable[[Any, Any], Awaitable[Any]],
        arg: Any,
        *,
        interruptible: bool = False,
    ) -> Any:
        """Run an activity; when it gives up, park until ``retry``, then run it again.

        ``interruptible``: a withdrawal or an offline signature ends the park without a retry
        (the call's result no longer matters); the call then returns ``_INTERRUPTED``.
        """
        while True:
            try:
                return await workflow.execute_activity_method(method, arg, **self._options())
            except ActivityError as err:
                if cancelled(err):
                    raise
                failure = parked_failure(name, err)
                seen = self._retry  # before the park is visible: a retry from then on counts
                self._status.parked = failure
                await self._tell_parent(failure)

                def resumed(seen: int = seen) -> bool:
                    return self._retry > seen or (
                        interruptible and (self._withdrawal or self._offline) is not None
                    )

                await workflow.wait_condition(resumed)
                self._status.parked = None
                await self._tell_parent(None)
                if self._retry == seen:
                    return _INTERRUPTED

    async def _tell_parent(self, failure: ParkedFailure | None) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        await workflow.get_external_workflow_handle(parent.workflow_id).signal(
            "child_parked", ChildPark(workflow_id=workflow.info().workflow_id, failure=failure)
        )

    def _reminder_after(self, start: datetime) -> datetime:
        t = self._input.timing
        if t.reminder_seconds is not None:
            return start + timedelta(seconds=t.reminder_seconds)
        return add_business_hours(start, 8 * t.reminder_business_days, "UTC")

    def _options(self) -> dict[str, Any]:
        timeout = timedelta(seconds=self._input.timing.activity_timeout_seconds)
        return {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": self._input.retry.policy(
                non_retryable=NON_RETRYABLE, scale=DOCUSIGN_SCALE
            ),
        }
