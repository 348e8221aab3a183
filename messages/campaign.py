"""What the campaign and sequence workflows exchange: inputs, results, signals, queries, and
the campaign activities' inputs and outputs (``activities/campaigns.py``, per campaign;
``activities/sequence.py``, per contact).

Pure pydantic models, imported passed through by the workflows (``worker.SANDBOX_PASSTHROUGH``):
the sandbox re-executes a workflow module for every run, and building these classes again for
each of 10,000 sequences is measurable. The two functions here build messages: ``step_plans``
(a campaign's steps as the sequence carries them) and ``attention_from`` (a park's record of an
activity's final failure); the rules they do not build (reply routing, resume times, windows)
are in ``domain/campaign_rules.py``.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from dealflow.ids import TASK_QUEUE
from domain.campaign_email import variant_names
from domain.schedule import SendWindow

# ApplicationError types the workflows match on.
CAMPAIGN_NOT_FOUND = "CampaignNotFound"
CONTACT_NOT_FOUND = "ContactNotFound"
# The sender's cap has no room within three years: the campaign's settings need a person.
NO_SEND_CAPACITY = "NoSendCapacity"
SEQUENCE_WORKFLOW_TYPE = "CampaignSequence"


# --- the campaign's steps, state and timing -----------------------------------------------------


class WindowSpec(BaseModel):
    """A step's send window as the workflow carries it (see domain.schedule.SendWindow)."""

    start: str = "09:00"
    end: str = "17:00"
    days: list[int] = [0, 1, 2, 3, 4]
    skip_holidays: bool = True

    def window(self) -> SendWindow:
        return SendWindow(
            start=dt.time.fromisoformat(self.start),
            end=dt.time.fromisoformat(self.end),
            days=frozenset(self.days),
            skip_holidays=self.skip_holidays,
        )


# Test mode: every day, all day, no holidays, so nothing waits for a window.
ALWAYS_OPEN = WindowSpec(
    start="00:00", end="23:59:59.999999", days=list(range(7)), skip_holidays=False
)


class StepPlan(BaseModel):
    index: int
    channel: Literal["email", "linkedin_task", "call_task"]
    wait_days: int
    window: WindowSpec
    variants: list[str] = []
    task_timeout_hours: float = 72.0


class CampaignState(BaseModel):
    """The campaign's status as the sequences know it; a higher version is newer."""

    status: str
    version: int
    reason: str | None = None


class SequenceTiming(BaseModel):
    """Timing chosen by the API from Settings (and the campaign's test mode), never the env."""

    activity_timeout_seconds: float = 30.0
    # The activities' retry backoff (first interval, cap); the attempt budgets are fixed in the
    # workflows. Test mode shortens the intervals so a spent budget parks within seconds.
    retry_initial_seconds: float | None = None  # None: each policy's own
    retry_max_interval_seconds: float | None = None
    test_mode: bool = False
    wait_day_seconds: float = 0.0  # test mode: how long one wait day lasts
    reply_window_seconds: float = 14 * 86400.0
    auto_reply_default_pause_days: int = 7
    auto_reply_max_pause_days: int = 30


class SequenceInput(BaseModel):
    campaign_id: str
    contact_email: str
    owner_email: str
    sender_email: str
    timezone: str
    country: str | None = None
    steps: list[StepPlan]
    state: CampaignState
    timing: SequenceTiming = SequenceTiming()


def step_plans(steps: list[dict[str, Any]], default_task_timeout_hours: float) -> list[StepPlan]:
    plans = []
    for i, step in enumerate(steps):
        window = step.get("send_window") or {}
        days = window.get("days_index")
        plans.append(
            StepPlan(
                index=i,
                channel=step["channel"],
                wait_days=int(step.get("wait_days") or 0),
                window=WindowSpec(
                    start=window.get("start", "09:00"),
                    end=window.get("end", "17:00"),
                    days=days if days is not None else [0, 1, 2, 3, 4],
                    skip_holidays=window.get("skip_holidays", True),
                ),
                variants=variant_names(step),
                task_timeout_hours=float(
                    step.get("task_timeout_hours") or default_task_timeout_hours
                ),
            )
        )
    return plans


class PreflightResult(BaseModel):
    ok: bool
    eligible: int
    excluded: int
    problems: list[str] = []


# --- the sequence's and the campaign's signals, queries and status -------------------------


class ReplyEvent(BaseModel):
    inbound_id: str
    kind: str
    rule: str
    from_email: str | None = None
    received_at: datetime
    bounce_type: str | None = None
    return_date: date | None = None
    resume_at: datetime | None = None  # auto-replies: computed once, by the webhook


class DeliveryEvent(BaseModel):
    type: str  # bounce | complaint
    message_id: str
    bounce_type: str | None = None
    reason: str


class ContactHold(BaseModel):
    kind: str  # "stop" | "pause"
    reason: str
    outcome: str | None = None
    until: datetime | None = None


class TaskDone(BaseModel):
    step_index: int
    by: str


class SentEmail(BaseModel):
    step: int
    message_id: str
    subject: str | None = None
    variant: str | None = None
    at: datetime | None = None
    unconfirmed: bool = False


class HistoryEntry(BaseModel):
    at: datetime
    event: str
    step: int | None = None
    detail: str | None = None


class Attention(BaseModel):
    """Where a parked campaign or sequence waits for a person: what failed, and why.

    A workflow parks when an activity fails for good (a non-retryable error, or its retry
    budget spent); a retry (API or the ``retry`` signal) runs that step again.
    """

    activity: str  # the activity that failed
    error: str  # its error message
    error_type: str | None = None  # the ApplicationError type (or exception class)
    retry_state: str | None = None  # why Temporal stopped retrying (MAXIMUM_ATTEMPTS_REACHED, …)
    step: int | None = None  # the sequence's step, when there is one
    since: datetime
    retries: int = 0  # ops retries of this park's process so far

    @property
    def reason(self) -> str:
        return f"{self.activity} failed: {self.error}"


def attention_from(
    activity_name: str,
    err: BaseException,
    at: datetime,
    *,
    step: int | None = None,
    retries: int = 0,
) -> Attention:
    """The park's record of an activity's final failure (an ``ActivityError`` and its cause)."""
    cause = getattr(err, "cause", None) or err
    if isinstance(cause, ApplicationError):
        error, error_type = cause.message, cause.type
    else:
        error, error_type = str(cause) or type(cause).__name__, type(cause).__name__
        kind = getattr(cause, "type", None)  # a TimeoutError names its timeout
        if kind is not None and hasattr(kind, "name"):
            error_type = f"{error_type}:{kind.name}"
    retry_state = getattr(err, "retry_state", None)
    return Attention(
        activity=activity_name,
        error=error or "failed",
        error_type=error_type,
        retry_state=retry_state.name if retry_state is not None else None,
        step=step,
        since=at,
        retries=retries,
    )


class RetryRequest(BaseModel):
    """The ``retry`` signal's (optional) argument: who asked, for the history."""

    by: str | None = None


class SequenceStatus(BaseModel):
    campaign_id: str
    contact_email: str
    # scheduled | waiting | sending | paused | waiting_task | awaiting_replies | completed |
    # stopped | cancelled | needs_attention
    state: str = "scheduled"
    step: int | None = None  # 0-based index of the current step
    steps_total: int = 0
    next_send_at: datetime | None = None
    paused_until: datetime | None = None
    pause_reason: str | None = None
    stop_reason: str | None = None
    outcome: str | None = None
    campaign_status: str = "active"
    sent: list[SentEmail] = []
    history: list[HistoryEntry] = []
    attention: Attention | None = None


class CampaignOptions(BaseModel):
    """Chosen by the API from Settings; nothing in workflows/ reads the environment."""

    task_queue: str = TASK_QUEUE
    activity_timeout_seconds: float = 30.0
    batch_size: int = 200
    batches_per_run: int = 20
    progress_interval_seconds: float = 60.0
    hard_bounce_threshold: float = 0.05
    hard_bounce_min_sends: int = 50
    timing: SequenceTiming = SequenceTiming()


class CampaignProgress(BaseModel):
    """What a run hands to the next one when it continues as new."""

    preflight: PreflightResult | None = None
    cursor: int = 0  # position of the last contact enrolled
    enrolment_done: bool = False
    started: int = 0
    announced_version: int = 0
    runs: int = 1


class CampaignInput(BaseModel):
    campaign_id: str
    owner_email: str
    state: CampaignState
    options: CampaignOptions = CampaignOptions()
    progress: CampaignProgress = CampaignProgress()


class BounceRecorded(BaseModel):
    message_id: str


class CampaignStatus(BaseModel):
    campaign_id: str
    # preflight | enrolling | running | paused | needs_attention | completed | cancelled | failed
    phase: str
    state: CampaignState
    progress: CampaignProgress
    open_sequences: int | None = None
    attention: Attention | None = None


# --- activity inputs and results ---------------------------------------------------------------


class CampaignRef(BaseModel):
    campaign_id: str


class EnrolBatchInput(BaseModel):
    campaign_id: str
    after_position: int
    limit: int
    task_queue: str
    timing: SequenceTiming


class EnrolBatchResult(BaseModel):
    last_position: int
    started: int
    already: int
    done: bool
    state: CampaignState


class BroadcastInput(BaseModel):
    campaign_id: str
    state: CampaignState


class ProgressResult(BaseModel):
    open: int
    state: CampaignState


class BounceCheckInput(BaseModel):
    campaign_id: str
    threshold: float
    min_sends: int


class BounceCheckResult(BaseModel):
    paused: bool
    sends: int
    hard_bounces: int
    state: CampaignState
    reason: str | None = None


class FinishCampaignInput(BaseModel):
    campaign_id: str
    status: Literal["completed", "cancelled", "failed"]
    reason: str | None = None


class SendEmailInput(BaseModel):
    campaign_id: str
    contact_email: str
    step_index: int
    message_id: str  # made in the workflow: the idempotency key
    references: list[str] = []  # Message-IDs of this contact's earlier steps, oldest first
    thread_subject: str | None = None  # a follow-up without its own subject answers this one
    variant: str | None = None
    requested_at: dt.datetime  # when the step became due: orders overflow past the cap
    window: WindowSpec
    timezone: str
    country: str | None = None
    # Added to the attempt number that owns the claim: an ops retry schedules the activity
    # afresh (attempts count from 1 again), so each retry round gets its own range.
    attempt_base: int = 0


class SendEmailResult(BaseModel):
    outcome: Literal["sent", "deferred", "campaign_paused", "campaign_cancelled", "held", "stopped"]
    sent_at: dt.datetime | None = None
    retry_at: dt.datetime | None = None  # deferred: the reserved slot; held: the pause's end
    subject: str | None = None
    state: CampaignState | None = None
    reason: str | None = None
    stop_outcome: str | None = None  # stopped: one word for the counts
    unconfirmed: bool = False


class RecordContactInput(BaseModel):
    campaign_id: str
    contact_email: str
    event: str
    detail: str | None = None
    at: dt.datetime
    key: str
    status: str | None = None
    step_index: int | None = None
    next_send_at: dt.datetime | None = None
    outcome: str | None = None
    closed: bool = False


class CreateTaskInput(BaseModel):
    task_id: str
    campaign_id: str
    contact_email: str
    owner_email: str
    kind: str
    step_index: int | None = None
    due_at: dt.datetime | None = None


class CreateTaskResult(BaseModel):
    task_id: str
    title: str
    status: str


class CompleteTaskInput(BaseModel):
    task_id: str
    status: Literal["done", "timed_out", "cancelled"]
    by: str | None = None
    campaign_id: str | None = None
    contact_email: str | None = None


class RecordAttentionInput(BaseModel):
    campaign_id: str
    contact_email: str | None = None  # None: the campaign itself
    attention: Attention | None = None  # None: clear it (a retry resumed the process)


class RouteReplyInput(BaseModel):
    inbound_id: str
    campaign_id: str
    contact_email: str
    owner_email: str
    kind: str
    create_task: bool
    record_referral: bool
    notify: bool


class RouteReplyResult(BaseModel):
    notification: str | None = None
    task_id: str | None = None


class NotifyRepInput(BaseModel):
    key: str
    campaign_id: str
    contact_email: str | None = None
    owner_email: str
    kind: str
    text: str
