"""CampaignWorkflow: preflight, enrolment in batches, and the campaign-wide pause/resume/cancel.

One per campaign (id ``campaign/<campaign id>``, see ``dealflow.ids``), started by launch.

Signals:  ``state_changed(CampaignState)`` — the API changed the campaign's status in the database
          (pause, resume, cancel) and answered; this fans it out to every open sequence.
          ``bounce_recorded(BounceRecorded)`` — a hard bounce arrived: re-check the bounce rate.
Queries:  ``status() -> CampaignStatus``.

The promise "no email after a pause's 202" does not depend on this workflow: the API changes the
status in PostgreSQL before it answers, and every send checks it in its own transaction. This
workflow makes the sequences *know* (their status query, and waking them on resume), and it
enrols: a page of pending contacts per activity, one sequence workflow each, with ids derived
from campaign and contact so nobody is enrolled twice. Every ``batches_per_run`` batches (or
when Temporal suggests it) it continues as new with its cursor, so its history stays bounded:
a campaign of 100,000 contacts is 500 batches over 25 runs, each as small as a campaign of 10.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.campaigns import (
        CAMPAIGN_NOT_FOUND,
        BounceCheckInput,
        BounceRecorded,
        BroadcastInput,
        CampaignActivities,
        CampaignInput,
        CampaignOptions,
        CampaignProgress,
        CampaignRef,
        CampaignState,
        CampaignStatus,
        EnrolBatchInput,
        FinishCampaignInput,
        NotifyRepInput,
    )

__all__ = [
    "BounceRecorded",
    "CampaignInput",
    "CampaignOptions",
    "CampaignProgress",
    "CampaignStatus",
    "CampaignWorkflow",
]

# Database and Temporal-client activities: quick retries ride out restarts; a campaign that no
# longer exists cannot heal. Enrolment and fan-out heartbeat their cursor, so a retry resumes.
CAMPAIGN_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    non_retryable_error_types=[CAMPAIGN_NOT_FOUND],
)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=120),
    maximum_attempts=8,
)


@workflow.defn(name="Campaign")
class CampaignWorkflow:
    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        self._state = input.state
        self._progress = input.progress.model_copy(deep=True)
        self._phase = "preflight" if input.progress.preflight is None else "enrolling"
        self._changed = False
        self._bounce_check = False
        self._open: int | None = None

    @workflow.run
    async def run(self, input: CampaignInput) -> CampaignStatus:
        progress = self._progress
        if progress.preflight is None:
            progress.preflight = await workflow.execute_activity_method(
                CampaignActivities.preflight,
                CampaignRef(campaign_id=input.campaign_id),
                **self._options(heartbeat=True),
            )
            if not progress.preflight.ok:
                return await self._finish("failed", "; ".join(progress.preflight.problems))
        batches = 0
        while True:
            # A pause, resume or cancel first: a person is waiting to see it take effect.
            if self._state.version > progress.announced_version:
                state = self._state
                await workflow.execute_activity_method(
                    CampaignActivities.broadcast_state,
                    BroadcastInput(campaign_id=input.campaign_id, state=state),
                    **self._options(heartbeat=True),
                )
                progress.announced_version = state.version
                if state.status == "cancelled":
                    return await self._finish("cancelled", state.reason)
                continue
            if self._bounce_check:
                self._bounce_check = False
                await self._check_bounce_rate()
                continue
            if self._state.status == "active" and not progress.enrolment_done:
                if batches >= input.options.batches_per_run or self._history_is_long():
                    break
                self._phase = "enrolling"
                result = await workflow.execute_activity_method(
                    CampaignActivities.enrol_batch,
                    EnrolBatchInput(
                        campaign_id=input.campaign_id,
                        after_position=progress.cursor,
                        limit=input.options.batch_size,
                        task_queue=input.options.task_queue,
                        timing=input.options.timing,
                    ),
                    **self._options(heartbeat=True),
                )
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
            check = await workflow.execute_activity_method(
                CampaignActivities.campaign_progress,
                CampaignRef(campaign_id=input.campaign_id),
                **self._options(),
            )
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

    async def _check_bounce_rate(self) -> None:
        opts = self._input.options
        result = await workflow.execute_activity_method(
            CampaignActivities.check_bounce_rate,
            BounceCheckInput(
                campaign_id=self._input.campaign_id,
                threshold=opts.hard_bounce_threshold,
                min_sends=opts.hard_bounce_min_sends,
            ),
            **self._options(),
        )
        self._adopt(result.state)
        if not result.paused:
            return
        try:
            await workflow.execute_activity_method(
                CampaignActivities.notify_rep,
                NotifyRepInput(
                    key=f"bounce-pause/{self._input.campaign_id}/{result.state.version}",
                    campaign_id=self._input.campaign_id,
                    owner_email=self._input.owner_email,
                    kind="campaign_paused",
                    text=f"Campaign {self._input.campaign_id} paused itself: {result.reason}.",
                ),
                start_to_close_timeout=self._timeout(),
                retry_policy=NOTIFY_RETRY,
            )
        except ActivityError:
            workflow.logger.warning("could not tell the rep about the bounce-rate pause")

    async def _finish(self, status: str, reason: str | None) -> CampaignStatus:
        state = await workflow.execute_activity_method(
            CampaignActivities.finish_campaign,
            FinishCampaignInput(campaign_id=self._input.campaign_id, status=status, reason=reason),
            **self._options(),
        )
        self._state = state
        self._phase = status
        return self.status()

    # --- messages --------------------------------------------------------------------------

    @workflow.signal
    def state_changed(self, state: CampaignState) -> None:
        self._adopt(state)

    @workflow.signal
    def bounce_recorded(self, _: BounceRecorded) -> None:
        self._bounce_check = True
        self._changed = True

    @workflow.query
    def status(self) -> CampaignStatus:
        return CampaignStatus(
            campaign_id=self._input.campaign_id,
            phase=self._phase,
            state=self._state,
            progress=self._progress,
            open_sequences=self._open,
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

    def _options(self, *, heartbeat: bool = False) -> dict:
        timeout = self._timeout()
        options: dict = {"start_to_close_timeout": timeout, "retry_policy": CAMPAIGN_RETRY}
        if heartbeat:
            # Preflight, enrolment and fan-out page through many contacts: a longer budget,
            # with a heartbeat per page so a dead worker is noticed (and the retry resumes).
            options["start_to_close_timeout"] = timeout * 40
            options["heartbeat_timeout"] = timeout
        return options
