"""CampaignWorkflow: preflight, enrolment in batches, and the campaign-wide pause/resume/cancel.

One per campaign (id ``campaign/<campaign id>``, see ``dealflow.ids``), started by launch.

Signals:  ``state_changed(CampaignState)`` — the API changed the campaign's status in the database
          (pause, resume, cancel) and answered; this fans it out to every open sequence.
          ``bounce_recorded(BounceRecorded)`` — a hard bounce arrived: re-check the bounce rate.
          ``retry(RetryRequest | None)`` — ops: run the failed step of a parked campaign again
          (``POST /v1/campaigns/{id}/retry`` sends it; so can the Temporal UI, with no input).
Queries:  ``status() -> CampaignStatus`` (``phase`` ``needs_attention`` and ``attention`` while
          parked).

Failures: every activity retries within a budget (``CAMPAIGN_RETRY``); a failure no retry can
fix, or one that outlasts the budget, parks the campaign in ``needs_attention`` with the error:
in its status, the ``CampaignStatus`` search attribute and (through ``record_attention``) the
campaign's row. It waits there for a retry, which runs the failed step again; a pause, resume or
cancel meanwhile is carried out first (cancel ends it), then the step is tried again. The
campaign's status in the database, the send gate, is never changed by a park: sequences already
running carry on, and a pause or cancel stops them as always.

The promise "no email after a pause's 202" does not depend on this workflow: the API changes the
status in PostgreSQL before it answers, and every send checks it in its own transaction. This
workflow makes the sequences *know* (their status query, and waking them on resume), and it
enrols: a page of pending contacts per activity, one sequence workflow each, with ids derived
from campaign and contact so nobody is enrolled twice. Every ``batches_per_run`` batches (or
when Temporal suggests it) it continues as new with its cursor, so its history stays bounded:
a campaign of 100,000 contacts is 500 batches over 25 runs, each as small as a campaign of 10.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.campaigns import CampaignActivities
    from activities.sequence import SequenceActivities
    from dealflow.ids import SA_CAMPAIGN_STATUS
    from messages.campaign import (
        CAMPAIGN_NOT_FOUND,
        Attention,
        BounceCheckInput,
        BounceRecorded,
        BroadcastInput,
        CampaignInput,
        CampaignRef,
        CampaignState,
        CampaignStatus,
        EnrolBatchInput,
        FinishCampaignInput,
        NotifyRepInput,
        PreflightResult,
        RecordAttentionInput,
        RetryRequest,
        attention_from,
    )
    from workflows.campaign_retry import ATTENTION_RETRY, NOTIFY_RETRY, retry_budget
    from workflows.parking import worker_loss_timeout

# Database and Temporal-client activities. Ten attempts, 1 s doubling to a minute: about four
# minutes of tries, enough to ride out a worker restart, a database failover or a Temporal
# blip; a failure still there after that is not healing by itself, so the campaign parks in
# needs_attention for a person instead of retrying forever. A campaign that no longer exists
# cannot heal. Enrolment and fan-out heartbeat their cursor, so a retry resumes.
CAMPAIGN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=[CAMPAIGN_NOT_FOUND],
)

# Patches: parking instead of failing the workflow (before it, a final activity failure failed
# the run), and cancelling a preflight in flight when the campaign is cancelled.
PATCH_PARK = "campaign-park-needs-attention"
PATCH_CANCEL_PREFLIGHT = "campaign-cancel-preflight"

_PARKED: Any = object()  # what ``_call`` returns when the step failed and the campaign parked


@workflow.defn(name="Campaign")
class CampaignWorkflow:
    """One campaign: preflight, enrolment, fan-out of pause/resume/cancel, completion.

    Signals: ``state_changed``, ``bounce_recorded``, ``retry``. Queries: ``status``.
    See the module docstring.
    """

    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        self._state = input.state
        self._progress = input.progress.model_copy(deep=True)
        self._phase = "preflight" if input.progress.preflight is None else "enrolling"
        self._changed = False
        self._bounce_check = False
        self._open: int | None = None
        self._attention: Attention | None = None
        self._retry = False
        self._retries = 0
        self._pending_notice: NotifyRepInput | None = None

    @workflow.run
    async def run(self, input: CampaignInput) -> CampaignStatus:
        progress = self._progress
        while progress.preflight is None:
            if self._state.status == "cancelled" and workflow.patched(PATCH_CANCEL_PREFLIGHT):
                return await self._finish("cancelled", self._state.reason)
            progress.preflight = await self._preflight()
        if not progress.preflight.ok:
            return await self._finish("failed", "; ".join(progress.preflight.problems))
        batches = 0
        while True:
            # A pause, resume or cancel first: a person is waiting to see it take effect.
            if self._state.version > progress.announced_version:
                state = self._state
                told = await self._call(
                    CampaignActivities.broadcast_state,
                    BroadcastInput(campaign_id=input.campaign_id, state=state),
                    heartbeat=True,
                )
                if told is _PARKED:
                    continue
                progress.announced_version = state.version
                if state.status == "cancelled":
                    return await self._finish("cancelled", state.reason)
                continue
            if self._pending_notice is not None:
                # A rep notification that parked (only ever after a park: see below).
                if await self._notify(self._pending_notice) is not _PARKED:
                    self._pending_notice = None
                continue
            if self._bounce_check:
                self._bounce_check = False
                await self._check_bounce_rate()
                continue
            if self._state.status == "active" and not progress.enrolment_done:
                if batches >= input.options.batches_per_run or self._history_is_long():
                    break
                self._phase = "enrolling"
                result = await self._call(
                    CampaignActivities.enrol_batch,
                    EnrolBatchInput(
                        campaign_id=input.campaign_id,
                        after_position=progress.cursor,
                        limit=input.options.batch_size,
                        task_queue=input.options.task_queue,
                        timing=input.options.timing,
                    ),
                    heartbeat=True,
                )
                if result is _PARKED:
                    continue
                self._adopt(result.state)
                progress.cursor = result.last_position
                progress.started += result.started
                progress.enrolment_done = result.done
                batches += 1
                if result.started or result.already or result.done:
                    continue
                # Nothing enrolled and not done: the campaign is not active in the database
                # (yet, or any more). Wait for a state change or the next progress check.
            self._phase = "paused" if self._state.status == "paused" else "running"
            check = await self._call(
                CampaignActivities.campaign_progress, CampaignRef(campaign_id=input.campaign_id)
            )
            if check is _PARKED:
                continue
            self._adopt(check.state)
            self._open = check.open
            if self._state.version > progress.announced_version:
                continue
            if progress.enrolment_done and check.open == 0:
                return await self._finish("completed", None)
            if self._history_is_long():
                break
            self._changed = False
            try:
                await workflow.wait_condition(
                    lambda: self._changed, timeout=input.options.progress_interval_seconds
                )
            except TimeoutError:
                pass
        # Continue as new with the cursor: the next run starts with an empty history.
        await workflow.wait_condition(workflow.all_handlers_finished)
        progress.runs += 1
        workflow.continue_as_new(
            CampaignInput(
                campaign_id=input.campaign_id,
                owner_email=input.owner_email,
                state=self._state,
                options=input.options,
                progress=progress,
            )
        )

    async def _preflight(self) -> PreflightResult | None:
        """The preflight; None when it parked (then retried) or the campaign was cancelled."""
        handle = workflow.start_activity_method(
            CampaignActivities.preflight,
            CampaignRef(campaign_id=self._input.campaign_id),
            **self._options(heartbeat=True),
        )
        # A cancel need not wait for a long (or failing) preflight: stop it and end.
        await workflow.wait_condition(lambda: handle.done() or self._state.status == "cancelled")
        if not handle.done() and workflow.patched(PATCH_CANCEL_PREFLIGHT):
            handle.cancel()
            try:
                await handle
            except (ActivityError, asyncio.CancelledError):
                pass
            return None
        try:
            result: PreflightResult = await handle
            return result
        except ActivityError as err:
            await self._park("preflight", err)
            return None

    async def _check_bounce_rate(self) -> None:
        opts = self._input.options
        result = await self._call(
            CampaignActivities.check_bounce_rate,
            BounceCheckInput(
                campaign_id=self._input.campaign_id,
                threshold=opts.hard_bounce_threshold,
                min_sends=opts.hard_bounce_min_sends,
            ),
        )
        if result is _PARKED:
            self._bounce_check = True  # the failed step: checked again after the park
            return
        self._adopt(result.state)
        if not result.paused:
            return
        notice = NotifyRepInput(
            key=f"bounce-pause/{self._input.campaign_id}/{result.state.version}",
            campaign_id=self._input.campaign_id,
            owner_email=self._input.owner_email,
            kind="campaign_paused",
            text=f"Campaign {self._input.campaign_id} paused itself: {result.reason}.",
        )
        try:
            if await self._notify(notice) is _PARKED:
                self._pending_notice = notice
        except ActivityError:
            # Only histories from before parking get here (see _park): they logged and went on.
            workflow.logger.warning("could not tell the rep about the bounce-rate pause")

    async def _notify(self, notice: NotifyRepInput) -> Any:
        return await self._call(SequenceActivities.notify_rep, notice, retry=NOTIFY_RETRY)

    async def _finish(
        self, status: Literal["completed", "cancelled", "failed"], reason: str | None
    ) -> CampaignStatus:
        while True:
            state = await self._call(
                CampaignActivities.finish_campaign,
                FinishCampaignInput(
                    campaign_id=self._input.campaign_id, status=status, reason=reason
                ),
            )
            if state is not _PARKED:
                break
        self._state = state
        # A cancel that landed while finishing was parked wins over "completed".
        self._phase = "cancelled" if state.status == "cancelled" else status
        return self.status()

    # --- failures: park in needs_attention, until a retry ----------------------------------

    async def _call(
        self,
        activity: Any,
        arg: Any,
        *,
        heartbeat: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Run an activity; if it fails for good, park and return ``_PARKED`` (the caller
        goes round its loop again, which runs the failed step again)."""
        try:
            return await workflow.execute_activity_method(
                activity, arg, **self._options(heartbeat=heartbeat, retry=retry)
            )
        except ActivityError as err:
            await self._park(activity.__name__, err)
            return _PARKED

    async def _park(self, activity_name: str, err: ActivityError) -> None:
        """Wait in needs_attention with the error until a retry, or a pause/resume/cancel."""
        if not workflow.patched(PATCH_PARK):
            raise err  # histories from before parking existed: the run failed here
        attention = attention_from(activity_name, err, workflow.now(), retries=self._retries)
        self._retry = False  # before the park shows: a retry from here on counts
        self._attention = attention
        before, version = self._phase, self._state.version
        self._phase = "needs_attention"
        workflow.logger.warning("campaign %s parked: %s", self._input.campaign_id, attention.reason)
        workflow.upsert_search_attributes([SA_CAMPAIGN_STATUS.value_set("needs_attention")])
        await self._record_attention(attention)
        await workflow.wait_condition(lambda: self._retry or self._state.version > version)
        if self._retry:
            self._retries += 1
        self._retry = False
        self._attention = None
        self._phase = before
        workflow.upsert_search_attributes([SA_CAMPAIGN_STATUS.value_unset()])
        await self._record_attention(None)

    async def _record_attention(self, attention: Attention | None) -> None:
        try:
            await workflow.execute_activity_method(
                CampaignActivities.record_attention,
                RecordAttentionInput(campaign_id=self._input.campaign_id, attention=attention),
                start_to_close_timeout=self._timeout(),
                heartbeat_timeout=worker_loss_timeout(self._timeout()),
                retry_policy=retry_budget(ATTENTION_RETRY, self._input.options.timing),
            )
        except ActivityError as err:
            workflow.logger.warning(
                "campaign %s: park not recorded in the database: %s",
                self._input.campaign_id,
                err.cause or err,
            )

    # --- messages --------------------------------------------------------------------------

    @workflow.signal
    def state_changed(self, state: CampaignState) -> None:
        self._adopt(state)

    @workflow.signal
    def bounce_recorded(self, _: BounceRecorded) -> None:
        self._bounce_check = True
        self._changed = True

    @workflow.signal
    def retry(self, request: RetryRequest | None = None) -> None:
        """Ops: run the failed step again (ignored unless the campaign is parked)."""
        if self._attention is not None:
            self._retry = True

    @workflow.query
    def status(self) -> CampaignStatus:
        return CampaignStatus(
            campaign_id=self._input.campaign_id,
            phase=self._phase,
            state=self._state,
            progress=self._progress,
            open_sequences=self._open,
            attention=self._attention,
        )

    # --- helpers ---------------------------------------------------------------------------

    def _adopt(self, state: CampaignState) -> None:
        if state.version > self._state.version:
            self._state = state
            self._changed = True

    def _history_is_long(self) -> bool:
        return workflow.info().is_continue_as_new_suggested()

    def _timeout(self) -> timedelta:
        return timedelta(seconds=self._input.options.activity_timeout_seconds)

    def _options(
        self, *, heartbeat: bool = False, retry: RetryPolicy | None = None
    ) -> dict[str, Any]:
        timeout = self._timeout()
        policy = retry_budget(retry or CAMPAIGN_RETRY, self._input.options.timing)
        options: dict[str, Any] = {
            "start_to_close_timeout": timeout,
            "heartbeat_timeout": worker_loss_timeout(timeout),
            "retry_policy": policy,
        }
        if heartbeat:
            # Preflight, enrolment and fan-out page through many contacts: a longer budget,
            # with a heartbeat per page (its cursor, which the retry resumes from).
            options["start_to_close_timeout"] = timeout * 40
        return options
