"""The handoff workflow's plumbing: run an activity with park-and-retry, show a status (the
query, the ``HandoffStatus`` search attribute, the mirror row), the timeline, the cancel
checkpoints. ``HandoffWorkflow`` (workflows/handoff.py) inherits it and reads as the process.

Parking (``handoff-park-and-retry``): an activity that spent its ``RetryBudget`` or failed with
an error no retry fixes parks the handoff in ``needs_attention`` (``parked`` says which and why)
until ``retry``; then only it runs again, and the status it had comes back.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.handoff import HandoffActivities
    from dealflow.ids import SA_HANDOFF_STATUS
    from messages.handoff import (
        CRM_REJECTED,
        DEAL_NOT_FOUND,
        NOT_A_CSM,
        CancelHandoff,
        HandoffInput,
        HandoffStatus,
        MirrorInput,
        TimelineEntry,
    )
    from workflows.parking import (
        cancelled,
        describe_failure,
        park_reason,
        parked_failure,
        worker_loss_timeout,
    )

# Handoffs recorded before park-and-retry failed after RETRY's 50 attempts; new ones spend the
# timing's RetryBudget, then park in needs_attention until a ``retry`` (workflows/parking.py).
PARK_PATCH = "handoff-park-and-retry"

# Errors no retry can fix: they park at once.
NON_RETRYABLE = [DEAL_NOT_FOUND, NOT_A_CSM, CRM_REJECTED]

# Writing needs_attention itself while parking: two quick tries, then show it anyway (query and
# search attribute) — a park must not wait out a whole budget to become visible.
PARK_RECORD_ATTEMPTS = 2

# The policy of handoffs recorded before park-and-retry (kept for their replay).
# Database, mail, Slack and CRM calls: quick retries ride out a restart or a blip; the interval
# grows to a minute and the attempts are capped at 50 (about 45 minutes) so a broken outside
# system shows as a failed activity in the UI instead of a silent retry forever. Business errors
# are non-retryable and named.
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=50,
    non_retryable_error_types=NON_RETRYABLE,
)


# A signature slower than this is a risk worth a line in the package (a hesitant customer).
SLOW_SIGNATURE_DAYS = 14


def signature_days(timeline: list[dict[str, Any]]) -> int | None:
    """Whole days from the first awaiting_signature to signature.completed in the closure's
    timeline (times as the closure recorded them), or None."""
    sent = next((t["at"] for t in timeline if t.get("event") == "stage.awaiting_signature"), None)
    done = next((t["at"] for t in timeline if t.get("event") == "signature.completed"), None)
    if sent is None or done is None:
        return None
    return (datetime.fromisoformat(done) - datetime.fromisoformat(sent)).days


def add_closure_facts(package: dict[str, Any], closure: dict[str, Any]) -> None:
    """What the closure knew at closed-won, added to the package: the signed documents, the
    approvers' words, the billing ids, and a slow signature as a risk."""
    package["documents"] = [
        {k: d.get(k) for k in ("id", "kind", "version", "sha256")}
        for d in closure.get("documents", [])
    ]
    package["approval_conditions"] = [
        {"role": a.get("role"), "by": a.get("decided_by"), "comment": a.get("comment")}
        for a in closure.get("approval_steps", [])
        if a.get("comment")
    ]
    billing = closure.get("billing") or {}
    package["billing"].update(
        {k: billing.get(k) for k in ("stripe_invoice_id", "stripe_subscription_id", "status")}
    )
    slow = signature_days(closure.get("timeline", []))
    if slow is not None and slow > SLOW_SIGNATURE_DAYS:
        package["risks"].append(f"slow signature: {slow} days from sending to signed")


class HandoffCancelled(Exception):
    """Raised inside the run when a cancel was accepted: the run ends the handoff cancelled."""


class HandoffSteps:
    """State and plumbing shared by the handoff's steps; ``HandoffWorkflow`` sets the state in
    its ``@workflow.init`` and declares every signal, query and update itself."""

    _input: HandoffInput
    _s: HandoffStatus
    _retry: int  # retry signals so far; a park waits for one more
    _retry_by: str | None
    _cancel: CancelHandoff | None
    _finishing: bool  # ending cancelled: nothing interrupts that

    def _note(self, event: str, detail: str | None) -> None:
        self._s.timeline.append(TimelineEntry(at=workflow.now(), event=event, detail=detail))

    async def _set_status(self, status: str, reason: str | None) -> None:
        self._s.status, self._s.status_reason = status, reason
        self._note(f"status.{status}", reason)
        workflow.upsert_search_attributes([SA_HANDOFF_STATUS.value_set(status)])
        await self._mirror()

    async def _show_status(self, status: str, reason: str | None) -> None:
        """Like ``_set_status`` for a park and its end: the mirror row gets two quick tries (the
        mirror may be what fails); the query and the search attribute change regardless."""
        self._s.status, self._s.status_reason = status, reason
        self._note(f"status.{status}", reason)
        workflow.upsert_search_attributes([SA_HANDOFF_STATUS.value_set(status)])
        options = self._options()
        options["retry_policy"] = self._input.timing.retry.model_copy(
            update={"maximum_attempts": PARK_RECORD_ATTEMPTS}
        ).policy(non_retryable=NON_RETRYABLE)
        try:
            await workflow.execute_activity_method(
                HandoffActivities.mirror, self._mirror_input(), **options
            )
        except ActivityError as err:
            self._note("status.not_recorded", f"{status}: {describe_failure(err)[1]}")

    async def _mirror(self, *, park: bool = True) -> None:
        await self._act(HandoffActivities.mirror, self._mirror_input(), park=park)

    def _mirror_input(self) -> MirrorInput:
        s = self._s
        return MirrorInput(
            deal_id=s.deal_id,
            status=s.status,
            status_reason=s.status_reason,
            csm_email=s.csm.email if s.csm else None,
            csm_reason=s.csm.reason if s.csm else None,
            kickoff_at=s.kickoff.at if s.kickoff else None,
            renewal_at=(
                datetime.combine(s.renewal.term_end, datetime.min.time()).replace(
                    tzinfo=workflow.now().tzinfo
                )
                if s.renewal
                else None
            ),
        )

    def _options(self) -> dict[str, Any]:
        timeout = timedelta(seconds=self._input.timing.activity_timeout_seconds)
        return {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": self._input.timing.retry.policy(non_retryable=NON_RETRYABLE),
        }

    async def _act(self, fn: Any, arg: Any, *, park: bool = True) -> Any:
        """Run one activity; when it gives up, park until a ``retry``, then run it again.

        ``park=False`` (the reassign update's calls): the failure goes to the caller instead,
        and a cancel does not interrupt the call (an update handler must not raise _Cancelled).
        """
        if not workflow.patched(PARK_PATCH):
            return await workflow.execute_activity_method(
                fn,
                arg,
                **{**self._options(), "retry_policy": RETRY},
            )
        while True:
            if park:
                self._checkpoint()
            try:
                return await self._run_activity(fn, arg, interruptible=park)
            except ActivityError as err:
                if not park or cancelled(err):
                    raise
                await self._park(fn.__name__, err)

    async def _run_activity(self, fn: Any, arg: Any, *, interruptible: bool) -> Any:
        """The activity, cancelled at once when the handoff is (a cancel never waits out a
        retry budget)."""
        if not interruptible or self._finishing:
            return await workflow.execute_activity_method(fn, arg, **self._options())
        handle = workflow.start_activity_method(fn, arg, **self._options())
        await workflow.wait_condition(lambda: handle.done() or self._cancel is not None)
        if not handle.done():
            handle.cancel()
        try:
            return await handle
        except ActivityError:
            if self._cancel is not None and not self._finishing:
                raise HandoffCancelled() from None
            raise

    async def _park(self, step: str, err: BaseException) -> None:
        """Show needs_attention with the error; wait for a retry (or a cancel)."""
        s = self._s
        failure = parked_failure(step, err)
        resume = (s.status, s.status_reason)
        reason = park_reason(failure)
        seen = self._retry  # before the park is visible: a retry sent while recording it counts
        s.parked = failure
        self._note("step.failed", reason)
        await self._show_status("needs_attention", reason)
        await workflow.wait_condition(
            lambda: self._retry > seen or (self._cancel is not None and not self._finishing)
        )
        s.parked = None
        self._checkpoint()
        self._note("step.retried", f"{step}, requested by {self._retry_by}")
        await self._show_status(*resume)

    def _checkpoint(self) -> None:
        if self._cancel is not None and not self._finishing:
            raise HandoffCancelled()

    async def _handlers_finished(self) -> None:
        """Wait for running handlers before the run ends; a cancel accepted meanwhile wins (its
        handler waits for the run to end cancelled, so waiting for it would never end)."""
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() or self._cancel is not None
        )
        self._checkpoint()

    def _history_too_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self._input.timing.history_limit
        )
