"""How a sequence calls its activities: the retry budgets, the park in needs_attention until a
retry runs a failed step again, and the contact's record (``record_contact``).

``SequenceCalls`` is the part of ``SequenceWorkflow`` (``workflows/sequence.py``) that runs
activities; it has no signals, queries or updates of its own (the workflow's ``retry`` signal
wakes a park here). Workflow code: deterministic, re-imported by the sandbox like the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.campaigns import CampaignActivities
    from activities.sequence import SequenceActivities
    from dealflow.ids import SA_CAMPAIGN_STATUS
    from messages.campaign import (
        CAMPAIGN_NOT_FOUND,
        CONTACT_NOT_FOUND,
        Attention,
        CampaignState,
        HistoryEntry,
        RecordAttentionInput,
        RecordContactInput,
        SendEmailInput,
        SequenceInput,
        SequenceStatus,
        attention_from,
    )
    from workflows.campaign_retry import ATTENTION_RETRY, retry_budget
    from workflows.parking import worker_loss_timeout

# Database and SMTP activities. Ten attempts, 1 s doubling to a minute: about four minutes of
# tries, which rides out a worker restart, a database failover, a lock timeout or a busy SMTP
# relay; a failure still there after that is not healing by itself, so the sequence parks in
# needs_attention for a person, the send still due (never dropped, never sent twice: its
# Message-ID and claim stay). A missing campaign or contact cannot heal.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=[CAMPAIGN_NOT_FOUND, CONTACT_NOT_FOUND],
)
# Before this patch a final activity failure failed the run (or, for reply routing, was noted).
PATCH_PARK = "sequence-park-needs-attention"
# Each ops retry of a send gets its own range of claim attempt numbers (see SendEmailInput).
ATTEMPT_RANGE = 1000
ABANDONED: Any = object()  # what ``_call`` returns when a stop made the parked step moot


@dataclass
class Stop:
    reason: str
    outcome: str | None
    status: str = "stopped"  # or "cancelled"


class SequenceCalls:
    """Activity calls, parks and records of one sequence (mixed into ``SequenceWorkflow``)."""

    _input: SequenceInput
    _status: SequenceStatus
    _campaign: CampaignState
    _stop: Stop | None
    _parks: dict[int, Attention]
    _park_seq: int
    _retry_round: int
    _record_seq: int

    async def _call(self, activity: Any, arg: Any, *, retry: RetryPolicy | None = None) -> Any:
        """Run an activity; if it fails for good, park until a retry runs it again.

        Returns ``ABANDONED`` when, while parked, a stop or the campaign's cancel made the
        step moot (the caller ends the step).
        """
        policy = retry_budget(retry or SEND_RETRY, self._input.timing)
        while True:
            try:
                return await workflow.execute_activity_method(
                    activity,
                    arg,
                    start_to_close_timeout=self._timeout(),
                    heartbeat_timeout=worker_loss_timeout(self._timeout()),
                    retry_policy=policy,
                )
            except ActivityError as err:
                if not await self._park(activity.__name__, err):
                    return ABANDONED
            if isinstance(arg, SendEmailInput):
                arg = arg.model_copy(update={"attempt_base": ATTEMPT_RANGE * self._retry_round})

    async def _park(self, activity_name: str, err: ActivityError) -> bool:
        """Wait in needs_attention until a retry (True) or a stop/cancel (False)."""
        if not workflow.patched(PATCH_PARK):
            raise err  # histories from before parking existed
        step = self._status.step
        attention = attention_from(
            activity_name, err, workflow.now(), step=step, retries=self._retry_round
        )
        self._park_seq += 1
        key = self._park_seq
        # What wakes the park is measured from here, before the park shows anywhere.
        round_, stopped = self._retry_round, self._stop is not None
        cancelled = self._campaign.status == "cancelled"
        self._parks[key] = attention
        self._note("needs_attention", step, attention.reason)
        workflow.upsert_search_attributes([SA_CAMPAIGN_STATUS.value_set("needs_attention")])
        await self._record_attention(attention)
        await workflow.wait_condition(
            lambda: (
                self._retry_round > round_
                or (not stopped and self._stop is not None)
                or (not cancelled and self._campaign.status == "cancelled")
            )
        )
        retried = self._retry_round > round_
        del self._parks[key]
        if not retried:
            self._note("park.abandoned", step, f"{activity_name} not retried: sequence ending")
        if not self._parks:
            workflow.upsert_search_attributes([SA_CAMPAIGN_STATUS.value_unset()])
            await self._record_attention(None)
        return retried

    async def _record_attention(self, attention: Attention | None) -> None:
        try:
            await workflow.execute_activity_method(
                CampaignActivities.record_attention,
                RecordAttentionInput(
                    campaign_id=self._input.campaign_id,
                    contact_email=self._input.contact_email,
                    attention=attention,
                ),
                start_to_close_timeout=self._timeout(),
                heartbeat_timeout=worker_loss_timeout(self._timeout()),
                retry_policy=retry_budget(ATTENTION_RETRY, self._input.timing),
            )
        except ActivityError as err:
            workflow.logger.warning(
                "sequence %s: park not recorded in the database: %s",
                workflow.info().workflow_id,
                err.cause or err,
            )

    def _note(self, event: str, step: int | None, detail: str | None) -> None:
        self._status.history.append(
            HistoryEntry(at=workflow.now(), event=event, step=step, detail=detail)
        )

    async def _record(
        self,
        event: str,
        step: int | None,
        detail: str | None,
        *,
        status: str | None = None,
        next_send_at: datetime | None = None,
        outcome: str | None = None,
        closed: bool = False,
    ) -> None:
        self._record_seq += 1
        await self._call(
            SequenceActivities.record_contact,
            RecordContactInput(
                campaign_id=self._input.campaign_id,
                contact_email=self._input.contact_email,
                event=event,
                detail=detail,
                at=workflow.now(),
                key=f"{workflow.info().workflow_id}/{self._record_seq}",
                status=status,
                step_index=step,
                next_send_at=next_send_at,
                outcome=outcome,
                closed=closed,
            ),
        )

    def _timeout(self) -> timedelta:
        return timedelta(seconds=self._input.timing.activity_timeout_seconds)
