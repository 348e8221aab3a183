"""Activities of campaigns: preflight, enrolment, the send, tasks, replies, notifications.

Every activity is safe to retry. The one that matters most is :meth:`CampaignActivities.send_email`;
how it keeps its two promises is written out there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import time as time_module
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import defer
from temporalio import activity
from temporalio.common import (
    RetryPolicy,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.email import (
    EmailLayout,
    MissingField,
    SmtpAmbiguous,
    SmtpMailer,
    SmtpRejected,
    SmtpTransient,
    build_message,
    contact_context,
    render_part,
    render_step,
    unsubscribe_token,
    variant_names,
)
from db import campaigns as campaigns_db
from db.campaign_models import (
    Campaign,
    CampaignContact,
    CampaignSend,
    InboundMessage,
    RepNotification,
    RepTask,
    SenderDayUsage,
    SenderMailbox,
)
from db.models import Person
from dealflow.faults import CrashPoints
from dealflow.ids import SA_CAMPAIGN_ID, sequence_workflow_id
from dealflow.settings import Settings
from domain.schedule import SendWindow, daily_cap, local_instant, next_send_time

log = logging.getLogger(__name__)

# ApplicationError types the workflows match on.
CAMPAIGN_NOT_FOUND = "CampaignNotFound"
CONTACT_NOT_FOUND = "ContactNotFound"
# The sender's cap has no room within three years: the campaign's settings need a person.
NO_SEND_CAPACITY = "NoSendCapacity"
SEQUENCE_WORKFLOW_TYPE = "CampaignSequence"
# How many sequence starts / signals an activity keeps in flight against the Temporal server.
_FANOUT = 32
_PREFLIGHT_PAGE = 1000
_MAILBOX_TTL_SECONDS = 5.0


# --- shared models (the workflows import these) -----------------------------------------------


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


# --- the sequence's and the campaign's messages, status and routing ---------------------------
# Defined here, in a module the workflows import passed through, rather than in the workflow
# modules: the sandbox re-executes a workflow module for every run, and building these pydantic
# classes again for each of 10,000 sequences is measurable.


# Business hours used to find "the next business day" after an out-of-office's return date.
BUSINESS_DAY = SendWindow(start=time(9), end=time(17))


@dataclass(frozen=True)
class ReplyRoute:
    """What a classified reply does to the sequence, and what else happens."""

    action: str  # "stop" | "pause"
    outcome: str | None  # the contact's outcome word (counts)
    suppress: str | None = None  # suppression reason, when the address must never be mailed
    suppress_all_senders: bool = False
    notify: bool = False  # tell the rep in Slack, with the thread
    task: bool = False  # create a follow-up task for the rep
    referral: bool = False  # record the referred person


REPLY_ROUTES: dict[str, ReplyRoute] = {
    "auto_reply": ReplyRoute("pause", None),
    "bounce": ReplyRoute("stop", "bounced"),
    "complaint": ReplyRoute("stop", "complained", "complaint", suppress_all_senders=True),
    "unsubscribe": ReplyRoute("stop", "unsubscribed", "unsubscribed"),
    "interested": ReplyRoute("stop", "interested", notify=True, task=True),
    "meeting_request": ReplyRoute("stop", "meeting_request", notify=True, task=True),
    "not_interested": ReplyRoute("stop", "not_interested"),
    "referral": ReplyRoute("stop", "referral", referral=True),
    "question": ReplyRoute("stop", "question", notify=True, task=True),
    "objection": ReplyRoute("stop", "objection", notify=True, task=True),
    # A person wrote back and we cannot tell what they want: a person should read it.
    "other": ReplyRoute("stop", "replied", notify=True, task=True),
}
# An interested or meeting reply is one call from a deal: the rep's message says how to make it.
ONE_CALL_AWAY = frozenset({"interested", "meeting_request"})


def reply_route(kind: str, bounce_type: str | None = None) -> ReplyRoute:
    """The route for a classification; hard bounces are also suppressed for every sender."""
    route = REPLY_ROUTES.get(kind, REPLY_ROUTES["other"])
    if kind == "bounce" and (bounce_type or "hard") == "hard":
        return ReplyRoute("stop", "bounced", "hard_bounce", suppress_all_senders=True)
    return route


def auto_reply_resume_at(
    return_date: date | None,
    received_at: datetime,
    tz: str,
    country: str | None,
    *,
    default_days: int,
    max_days: int,
) -> datetime:
    """When a sequence paused by an out-of-office resumes.

    The opening of the first business day after the return date in the contact's zone (they
    need a day to dig out), never later than ``max_days`` after the reply, and ``default_days``
    after it when the auto-reply gave no date. A return date already past resumes at once.
    """
    latest = received_at + timedelta(days=max_days)
    if return_date is None:
        resume = received_at + timedelta(days=default_days)
    else:
        try:
            start = local_instant(return_date, time(0), tz)
            resume = next_send_time(start, 1, BUSINESS_DAY, tz, country)
        except (ValueError, KeyError):
            resume = received_at + timedelta(days=default_days)
    return max(received_at, min(resume, latest))


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

    task_queue: str = "dealflow"
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


def task_id_for(*parts: object) -> str:
    """Deterministic, so a retried create converges on one task."""
    return "tsk_" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def retry_budget(policy: RetryPolicy, timing: SequenceTiming) -> RetryPolicy:
    """``policy`` with the campaign's backoff: test mode shortens the intervals, never the
    attempt budget, so a spent budget parks within seconds in the tests."""
    if timing.retry_initial_seconds is None:
        return policy
    return dataclasses.replace(
        policy,
        initial_interval=timedelta(seconds=timing.retry_initial_seconds),
        maximum_interval=timedelta(
            seconds=max(timing.retry_initial_seconds, timing.retry_max_interval_seconds or 0)
        ),
    )


def failure_key(campaign_id: str, contact_email: str | None = None) -> str:
    """The business key the poison tests arm a failure point with: the campaign's id, or the
    contact's sequence workflow id."""
    return sequence_workflow_id(campaign_id, contact_email) if contact_email else campaign_id


def _template_error(err: Exception, where: str) -> str:
    """A template that compiles but raises when rendered (``{{ 1/0 }}``, a filter on a value)."""
    return f"template error in {where}: {type(err).__name__}: {err}"


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _contact_dict(c: CampaignContact) -> dict[str, Any]:
    return {
        "email": c.email,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "company": c.company,
        "title": c.title,
        "timezone": c.timezone,
        "country": c.country,
        "fields": c.fields or {},
    }


def _display_name(c: CampaignContact) -> str:
    name = " ".join(p for p in (c.first_name, c.last_name) if p)
    return name or c.email


class ClaimLost(RuntimeError):
    """A later attempt of the same send took the claim over; this one must not send."""


class _Claim(BaseModel):
    kind: Literal["go", "already", "deferred", "failed"]
    retry_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    unconfirmed: bool = False


class CampaignActivities:
    """Built once in worker.py with its collaborators; tests build it the same way.

    ``claims`` is a second, small connection pool used only for the send's claim (see
    :meth:`send_email`); keeping it apart from ``sessions`` means a send never waits for a
    connection while holding one, so the two pools cannot starve each other.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker,
        claims: async_sessionmaker,
        mailer: SmtpMailer,
        layout: EmailLayout,
        slack: AsyncWebClient | None,
        crash_points: CrashPoints,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        # The clock is injectable so tests can cross midnight for the sender's daily cap.
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._mailboxes: dict[str, tuple[float, SenderMailbox]] = {}
        self._settings = settings
        self._sessions = sessions
        self._claims = claims
        self._mailer = mailer
        self._layout = layout
        self._slack = slack
        self._crash = crash_points

    async def _campaign(self, session: AsyncSession, campaign_id: str, lock: str | None = None):
        campaign = await campaigns_db.get_campaign(session, campaign_id=campaign_id, lock=lock)
        if campaign is None:
            raise ApplicationError(
                f"campaign {campaign_id} does not exist",
                type=CAMPAIGN_NOT_FOUND,
                non_retryable=True,
            )
        return campaign

    # --- preflight and enrolment -------------------------------------------------------------

    def _sender_problems(self, campaign: Campaign) -> list[str]:
        problems = []
        domain = campaigns_db.email_domain(campaign.sender_email)
        allowed = [d.lower() for d in self._settings.campaign_sender_domains]
        if domain not in allowed:
            problems.append(
                f"sender {campaign.sender_email} is not on a domain we send for "
                f"(SPF/DKIM cover: {', '.join(allowed)})"
            )
        if _zone(campaign.sender_timezone) is None:
            problems.append(f"sender time zone {campaign.sender_timezone!r} is unknown")
        if campaign.sender_daily_limit < 1:
            problems.append("sender daily_limit must be at least 1")
        if not self._settings.campaign_postal_address.strip():
            problems.append("no postal address is configured for the email footer")
        return problems

    @activity.defn
    async def preflight(self, input: CampaignRef) -> PreflightResult:
        """Check the sender and every contact; exclude (with the reason) who cannot be mailed.

        Per contact: a known time zone, not suppressed (unsubscribed, hard-bounced, complained,
        do-not-contact domain), and every template of every step renders (a missing field uses
        a declared fallback, or excludes the contact). Duplicates were merged at creation; the
        report lists them. Safe to retry: it only ever moves pending contacts to excluded.
        """
        self._crash.failures.check("preflight", input.campaign_id)
        async with self._sessions() as session:
            campaign = await self._campaign(session, input.campaign_id)
            problems = self._sender_problems(campaign)
        sender = {"name": campaign.sender_name, "email": campaign.sender_email}
        if problems:
            await self._write_report(campaign.id, problems, {})
            return PreflightResult(ok=False, eligible=0, excluded=0, problems=problems)
        by_reason: Counter[str] = Counter()
        after = 0
        while True:
            async with self._sessions.begin() as session:
                rows = list(
                    (
                        await session.execute(
                            select(CampaignContact)
                            .where(
                                CampaignContact.campaign_id == campaign.id,
                                CampaignContact.position > after,
                                CampaignContact.status == "pending",
                            )
                            .order_by(CampaignContact.position)
                            .limit(_PREFLIGHT_PAGE)
                        )
                    ).scalars()
                )
                if not rows:
                    break
                suppressed = await campaigns_db.suppressions_among(
                    session, emails=[r.email for r in rows], sender_email=campaign.sender_email
                )
                for contact in rows:
                    reason, category = self._exclusion(campaign, contact, sender, suppressed)
                    if reason is not None:
                        contact.status = "excluded"
                        contact.excluded_reason = reason
                        by_reason[category] += 1
                after = rows[-1].position
            activity.heartbeat(after)
        return await self._write_report(campaign.id, [], dict(by_reason))

    def _exclusion(
        self,
        campaign: Campaign,
        contact: CampaignContact,
        sender: dict[str, str],
        suppressed: dict[str, str],
    ) -> tuple[str | None, str]:
        if _zone(contact.timezone) is None:
            return f"unknown time zone {contact.timezone!r}", "invalid_timezone"
        if contact.email in suppressed:
            why = suppressed[contact.email]
            return f"suppressed: {why}", f"suppressed:{why}"
        ctx = contact_context(_contact_dict(contact), campaign.fallbacks or {}, sender)
        for i, step in enumerate(campaign.steps):
            variants = variant_names(step) or [None]
            for variant in variants:
                try:
                    render_step(step, i, variant, ctx)
                except MissingField as err:
                    return str(err), f"missing_field:{err.field}"
                except Exception as err:  # compiles, but raises on this contact's values
                    where = f"step {i + 1}" + (f" (variant {variant})" if variant else "")
                    return _template_error(err, where), "template_error"
        return None, ""

    async def _write_report(
        self, campaign_id: str, problems: list[str], by_reason: dict[str, int]
    ) -> PreflightResult:
        async with self._sessions.begin() as session:
            campaign = await self._campaign(session, campaign_id, lock="update")
            statuses = dict(
                (
                    await session.execute(
                        select(CampaignContact.status, func.count())
                        .where(CampaignContact.campaign_id == campaign_id)
                        .group_by(CampaignContact.status)
                    )
                ).all()
            )
            excluded = statuses.get("excluded", 0)
            # Reasons counted on a retried run would miss the first run's: recount from rows.
            if excluded and not by_reason:
                by_reason = {}
                for entry in await campaigns_db.excluded_contacts(
                    session, campaign_id=campaign_id, limit=1_000_000
                ):
                    key = entry["reason"].split(":")[0] if entry["reason"] else "excluded"
                    by_reason[key] = by_reason.get(key, 0) + 1
            eligible = sum(n for s, n in statuses.items() if s != "excluded")
            sender_problems = list(problems)
            if not problems and not eligible:
                # Nobody left, and templates that raise are why: a launch that would mail
                # nobody ends here, with the template's error, instead of "completed".
                example = await session.scalar(
                    select(CampaignContact.excluded_reason)
                    .where(
                        CampaignContact.campaign_id == campaign_id,
                        CampaignContact.status == "excluded",
                        CampaignContact.excluded_reason.like("template error in %"),
                    )
                    .order_by(CampaignContact.position)
                    .limit(1)
                )
                if example:
                    problems = [f"no contact can be mailed: {example}"]
            campaign.preflight = {
                "state": "failed" if problems else "done",
                "checked": sum(statuses.values()),
                "eligible": 0 if problems else eligible,
                "excluded": excluded,
                "by_reason": by_reason,
                "excluded_contacts": await campaigns_db.excluded_contacts(
                    session, campaign_id=campaign_id
                ),
                "duplicates_merged": campaign.duplicates or [],
                "sender": {"ok": not sender_problems, "problems": sender_problems},
                "problems": problems,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }
        return PreflightResult(
            ok=not problems,
            eligible=0 if problems else eligible,
            excluded=excluded,
            problems=problems,
        )

    @activity.defn
    async def enrol_batch(self, input: EnrolBatchInput) -> EnrolBatchResult:
        """Start the sequences of the next pending contacts, in request order.

        Each sequence's workflow id comes from campaign and contact and id reuse is rejected,
        so a retried batch (or a contact listed twice) never enrols anyone twice.
        """
        self._crash.failures.check("enrol_batch", input.campaign_id)
        async with self._sessions() as session:
            campaign = await self._campaign(session, input.campaign_id)
            state = CampaignState(status=campaign.status, version=campaign.state_version)
            if campaign.status not in ("active",):
                return EnrolBatchResult(
                    last_position=input.after_position,
                    started=0,
                    already=0,
                    done=campaign.status in ("cancelled", "completed", "failed"),
                    state=state,
                )
            # "enrolled" is written before the sequences start, so it never contends with their
            # first sends; a retry after a crash in between finds them still "enrolled" at
            # positions past the cursor and starts them (a second start is refused anyway).
            contacts = list(
                (
                    await session.execute(
                        select(CampaignContact)
                        .where(
                            CampaignContact.campaign_id == campaign.id,
                            CampaignContact.position > input.after_position,
                            CampaignContact.status.in_(["pending", "enrolled"]),
                        )
                        .order_by(CampaignContact.position)
                        .limit(input.limit)
                    )
                ).scalars()
            )
            if contacts:
                await session.execute(
                    update(CampaignContact)
                    .where(
                        CampaignContact.id.in_([c.id for c in contacts]),
                        CampaignContact.status == "pending",
                    )
                    .values(status="enrolled", updated_at=func.now())
                )
                await session.commit()
        if not contacts:
            return EnrolBatchResult(
                last_position=input.after_position, started=0, already=0, done=True, state=state
            )
        plans = step_plans(campaign.steps, self._settings.campaign_task_timeout_hours)
        client = activity.client()
        gate = asyncio.Semaphore(_FANOUT)

        async def start(contact: CampaignContact) -> bool:
            async with gate:
                activity.heartbeat(input.after_position)  # throttled by the SDK
                try:
                    await client.start_workflow(
                        SEQUENCE_WORKFLOW_TYPE,
                        SequenceInput(
                            campaign_id=campaign.id,
                            contact_email=contact.email,
                            owner_email=campaign.owner_email,
                            sender_email=campaign.sender_email,
                            timezone=contact.timezone,
                            country=contact.country,
                            steps=plans,
                            state=state,
                            timing=input.timing,
                        ),
                        id=sequence_workflow_id(campaign.id, contact.email),
                        task_queue=input.task_queue,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        search_attributes=TypedSearchAttributes(
                            [SearchAttributePair(SA_CAMPAIGN_ID, campaign.id)]
                        ),
                    )
                    return True
                except WorkflowAlreadyStartedError:
                    return False

        started = await asyncio.gather(*(start(c) for c in contacts))
        last = contacts[-1].position
        activity.heartbeat(last)
        return EnrolBatchResult(
            last_position=last,
            started=sum(started),
            already=len(started) - sum(started),
            done=len(contacts) < input.limit,
            state=state,
        )

    @activity.defn
    async def broadcast_state(self, input: BroadcastInput) -> int:
        """Tell every open sequence of the campaign its new state (pause, resume, cancel).

        Heartbeats its cursor, so a retry after a worker restart carries on where it stopped.
        Sequences that already closed are skipped.
        """
        self._crash.failures.check("broadcast_state", input.campaign_id)
        details = activity.info().heartbeat_details
        cursor = int(details[0]) if details else 0
        client = activity.client()
        gate = asyncio.Semaphore(_FANOUT)
        told = 0

        async def tell(email: str) -> int:
            async with gate:
                activity.heartbeat(cursor)  # throttled by the SDK
                handle = client.get_workflow_handle(sequence_workflow_id(input.campaign_id, email))
                try:
                    await handle.signal("campaign_state", input.state)
                    return 1
                except RPCError as err:
                    if err.status == RPCStatusCode.NOT_FOUND:
                        return 0
                    raise

        while True:
            async with self._sessions() as session:
                rows = (
                    await session.execute(
                        select(CampaignContact.id, CampaignContact.email)
                        .where(
                            CampaignContact.campaign_id == input.campaign_id,
                            CampaignContact.id > cursor,
                            CampaignContact.status.not_in(["pending", "excluded"]),
                            CampaignContact.closed_at.is_(None),
                        )
                        .order_by(CampaignContact.id)
                        .limit(500)
                    )
                ).all()
            if not rows:
                return told
            told += sum(await asyncio.gather(*(tell(email) for _, email in rows)))
            cursor = rows[-1][0]
            activity.heartbeat(cursor)

    @activity.defn
    async def campaign_progress(self, input: CampaignRef) -> ProgressResult:
        """How many enrolled sequences are still open, and the campaign's state in the DB."""
        self._crash.failures.check("campaign_progress", input.campaign_id)
        async with self._sessions() as session:
            campaign = await self._campaign(session, input.campaign_id)
            open_count = await campaigns_db.open_contact_count(
                session, campaign_id=input.campaign_id
            )
        return ProgressResult(
            open=open_count,
            state=CampaignState(
                status=campaign.status,
                version=campaign.state_version,
                reason=campaign.status_reason,
            ),
        )

    @activity.defn
    async def check_bounce_rate(self, input: BounceCheckInput) -> BounceCheckResult:
        """Pause the campaign when its hard-bounce rate passes the threshold (enough sends)."""
        self._crash.failures.check("check_bounce_rate", input.campaign_id)
        async with self._sessions.begin() as session:
            campaign = await self._campaign(session, input.campaign_id)
            sends, hard = await campaigns_db.bounce_rate(session, campaign_id=input.campaign_id)
            reason = None
            changed = None
            if sends >= input.min_sends and sends and hard / sends > input.threshold:
                reason = (
                    f"hard-bounce rate {100 * hard / sends:.1f} % after {sends} sends is above "
                    f"{100 * input.threshold:g} %: check the list before resuming"
                )
                changed = await campaigns_db.set_campaign_status(
                    session,
                    campaign_id=input.campaign_id,
                    from_statuses=["active"],
                    to="paused",
                    reason=reason,
                )
            await session.refresh(campaign)
        return BounceCheckResult(
            paused=changed is not None,
            sends=sends,
            hard_bounces=hard,
            state=CampaignState(
                status=campaign.status,
                version=campaign.state_version,
                reason=campaign.status_reason,
            ),
            reason=reason,
        )

    @activity.defn
    async def finish_campaign(self, input: FinishCampaignInput) -> CampaignState:
        self._crash.failures.check("finish_campaign", input.campaign_id)
        async with self._sessions.begin() as session:
            if input.status == "cancelled":
                await session.execute(
                    update(Campaign)
                    .where(Campaign.id == input.campaign_id, Campaign.finished_at.is_(None))
                    .values(finished_at=func.now())
                )
            else:
                await campaigns_db.set_campaign_status(
                    session,
                    campaign_id=input.campaign_id,
                    from_statuses=["draft", "active", "paused"],
                    to=input.status,
                    reason=input.reason,
                    finished=True,
                )
            campaign = await self._campaign(session, input.campaign_id)
            await session.refresh(campaign)
            return CampaignState(
                status=campaign.status,
                version=campaign.state_version,
                reason=campaign.status_reason,
            )

    # --- the send ----------------------------------------------------------------------------

    @activity.defn
    async def send_email(self, input: SendEmailInput) -> SendEmailResult:
        """Send one step's email, at most once, and never after an acknowledged pause.

        In ONE transaction (connection A):

        1. The campaign's status lock, shared (``pg_advisory_xact_lock_shared``), then its
           status: it must be active. A pause or cancel takes the same lock exclusively, so it
           waits until this transaction ends (and new sends queue behind it); once it has
           committed (the API answers 202 only then), this check sees it. Hence: a send either
           finished its SMTP hand-over before the pause was acknowledged, or it does not happen.
           (Why not ``FOR SHARE`` on the row: see ``db.campaigns.lock_campaign_status``.)
        2. ``SELECT … FROM campaign_contacts … FOR UPDATE``: no hold (the mail webhooks write
           the hold before they answer, and their ``UPDATE`` waits for a send in flight, so a
           reply that arrived first stops this send), and the address is not suppressed
           (checked again right before every send).
        3. The claim, on a second connection, committed at once: the send row keyed by the
           workflow's Message-ID (status ``sending``, owned by this attempt), and one unit of
           the sender's daily cap (or a reservation on the next window day with room, in the
           order claims arrive).
        4. SMTP. Once the server has accepted sender and recipient, and right before DATA,
           the row is marked ``handing_over`` (committed, and only if this attempt still owns
           the claim). A retry that finds ``sending`` knows nothing left and sends; one that
           finds ``handing_over`` cannot know whether the server kept the message, so it
           never sends it again and records it ``unconfirmed``. Only a worker dying during
           the DATA transfer itself lands there: at most once, never twice.
        5. The send row is marked ``sent`` and the contact updated; commit.
        """
        self._crash.failures.check(
            "send_email", failure_key(input.campaign_id, input.contact_email)
        )
        attempt = input.attempt_base + activity.info().attempt
        now = self._clock()
        async with self._sessions() as session, session.begin():
            # The status lock (shared), then the row, without the report columns a send never
            # reads (the preflight report lists up to 1,000 excluded contacts).
            await campaigns_db.lock_campaign_status(
                session, campaign_id=input.campaign_id, exclusive=False
            )
            campaign = (
                await session.execute(
                    select(Campaign)
                    .where(Campaign.id == input.campaign_id)
                    .options(defer(Campaign.preflight), defer(Campaign.duplicates))
                )
            ).scalar_one_or_none()
            if campaign is None:
                raise ApplicationError(
                    f"campaign {input.campaign_id} does not exist",
                    type=CAMPAIGN_NOT_FOUND,
                    non_retryable=True,
                )
            state = CampaignState(
                status=campaign.status,
                version=campaign.state_version,
                reason=campaign.status_reason,
            )
            if campaign.status == "cancelled":
                return SendEmailResult(outcome="campaign_cancelled", state=state)
            if campaign.status != "active":
                return SendEmailResult(outcome="campaign_paused", state=state)
            # FOR UPDATE, not FOR SHARE: this transaction writes the row at the end, and
            # upgrading a share lock while a webhook's UPDATE waits for it is a deadlock.
            # Only this contact's own sequence sends to it, so nothing else waits for long.
            found = (
                await session.execute(
                    select(
                        CampaignContact,
                        campaigns_db.suppression_reason_of(
                            CampaignContact.email, CampaignContact.domain, campaign.sender_email
                        ),
                    )
                    .where(
                        CampaignContact.campaign_id == input.campaign_id,
                        CampaignContact.email == campaigns_db.normalize_email(input.contact_email),
                    )
                    .with_for_update(of=CampaignContact)
                )
            ).one_or_none()
            if found is None:
                raise ApplicationError(
                    f"{input.contact_email} is not a contact of {input.campaign_id}",
                    type=CONTACT_NOT_FOUND,
                    non_retryable=True,
                )
            contact, suppressed = found
            if contact.hold == "stopped":
                return SendEmailResult(
                    outcome="stopped",
                    reason=contact.hold_reason,
                    stop_outcome=contact.outcome,
                    state=state,
                )
            if contact.hold == "paused" and contact.hold_until and contact.hold_until > now:
                return SendEmailResult(
                    outcome="held", retry_at=contact.hold_until, reason=contact.hold_reason
                )
            if suppressed is not None:
                return await self._stop_at_send(
                    session, contact, f"suppressed: {suppressed}", "suppressed", input
                )
            sender = {"name": campaign.sender_name, "email": campaign.sender_email}
            step = campaign.steps[input.step_index]
            ctx = contact_context(_contact_dict(contact), campaign.fallbacks or {}, sender)
            try:
                content = render_step(step, input.step_index, input.variant, ctx)
            except MissingField as err:
                return await self._stop_at_send(session, contact, str(err), "template_error", input)
            except Exception as err:  # compiles, but raises on this contact's values
                where = f"step {input.step_index + 1}"
                reason = _template_error(err, where)
                return await self._stop_at_send(session, contact, reason, "template_error", input)
            subject = content.subject or (
                f"Re: {input.thread_subject}" if input.thread_subject else campaign.name
            )

            claim = await self._claim(input, campaign, subject, now, attempt)
            if claim.kind == "already":
                return SendEmailResult(
                    outcome="sent",
                    sent_at=claim.sent_at,
                    subject=subject,
                    unconfirmed=claim.unconfirmed,
                    state=state,
                )
            if claim.kind == "failed":
                return SendEmailResult(
                    outcome="stopped",
                    reason="the recipient's server refused the address",
                    stop_outcome="bounced",
                    state=state,
                )
            if claim.kind == "deferred":
                return SendEmailResult(outcome="deferred", retry_at=claim.retry_at, state=state)

            token = unsubscribe_token(
                self._settings.secret("link_signing_key"),
                campaign_id=campaign.id,
                sender_email=campaign.sender_email,
                contact_email=contact.email,
            )
            unsubscribe_url = f"{self._settings.public_base_url}/v1/unsubscribe/{token}"
            text_body, html_body = self._layout.render(
                body_text=content.text,
                context={
                    "subject": subject,
                    "sender_name": campaign.sender_name,
                    "postal_address": self._settings.campaign_postal_address,
                    "unsubscribe_url": unsubscribe_url,
                },
            )
            message = build_message(
                sender_name=campaign.sender_name,
                sender_email=campaign.sender_email,
                to_email=contact.email,
                to_name=" ".join(p for p in (contact.first_name, contact.last_name) if p) or None,
                subject=subject,
                text=text_body,
                html_body=html_body,
                message_id=input.message_id,
                references=input.references,
                unsubscribe_url=unsubscribe_url,
                unsubscribe_mailto=f"mailto:{campaign.sender_email}?subject=unsubscribe%20{token}",
                date=now,
                campaign_id=campaign.id,
            )
            self._crash.checkpoint("send_email.before_smtp")
            loop = asyncio.get_running_loop()

            def handing_over() -> None:  # runs in the SMTP thread, right before DATA
                asyncio.run_coroutine_threadsafe(
                    self._handing_over(input.message_id, attempt), loop
                ).result(timeout=30)

            try:
                await asyncio.to_thread(
                    self._mailer.send,
                    message,
                    mail_from=campaign.sender_email,
                    rcpt=contact.email,
                    before_data=handing_over,
                )
            except SmtpTransient:
                await self._release(input.message_id)
                raise
            except SmtpRejected as err:
                await self._mark_failed(input.message_id)
                await campaigns_db.add_suppression(
                    session,
                    kind="email",
                    value=contact.email,
                    reason="hard_bounce",
                    source=str(err),
                )
                return await self._stop_at_send(
                    session, contact, f"address refused: {err}", "bounced", input
                )
            except SmtpAmbiguous:
                # Leave the claim as it is: the retry will find it and not send again.
                raise
            self._crash.checkpoint("send_email.after_smtp")
            sent_at = self._clock()
            await session.execute(
                update(CampaignSend)
                .where(CampaignSend.message_id == input.message_id)
                .values(status="sent", sent_at=sent_at)
            )
            if contact.status in ("pending", "enrolled", "waiting"):
                contact.status = "active"
            contact.current_step = input.step_index
            contact.next_send_at = None
            await campaigns_db.append_event(
                session,
                campaign_id=campaign.id,
                contact_email=contact.email,
                event="email.sent",
                step_index=input.step_index,
                detail=f"“{subject}”" + (f" (variant {input.variant})" if input.variant else ""),
                at=sent_at,
                idempotency_key=f"sent/{input.message_id}",
            )
        return SendEmailResult(outcome="sent", sent_at=sent_at, subject=subject, state=state)

    async def _stop_at_send(
        self,
        session: AsyncSession,
        contact: CampaignContact,
        reason: str,
        outcome: str,
        input: SendEmailInput,
    ) -> SendEmailResult:
        contact.hold = "stopped"
        contact.hold_reason = reason
        contact.outcome = contact.outcome or outcome
        await campaigns_db.append_event(
            session,
            campaign_id=contact.campaign_id,
            contact_email=contact.email,
            event="send.refused",
            step_index=input.step_index,
            detail=reason,
            idempotency_key=f"refused/{input.message_id}",
        )
        return SendEmailResult(outcome="stopped", reason=reason, stop_outcome=outcome)

    async def _claim(
        self,
        input: SendEmailInput,
        campaign: Campaign,
        subject: str,
        now: dt.datetime,
        attempt: int,
    ) -> _Claim:
        """Claim the send (and a unit of the sender's cap) on the claims pool, committed now."""
        async with self._claims.begin() as session:
            row = await session.get(CampaignSend, input.message_id, with_for_update=True)
            if row is not None:
                if row.status == "sent":
                    return _Claim(kind="already", sent_at=row.sent_at)
                if row.status == "unconfirmed":
                    return _Claim(kind="already", sent_at=row.sent_at, unconfirmed=True)
                if row.status == "failed":
                    return _Claim(kind="failed")
                if row.status == "handing_over":
                    # An earlier attempt started handing the message over and never recorded
                    # the answer: the server may have kept it. Never risk a second copy.
                    row.status = "unconfirmed"
                    row.sent_at = row.sent_at or now
                    log.warning(
                        "send %s left mid-hand-over by attempt %d (now %d): recorded unconfirmed",
                        input.message_id,
                        row.attempt,
                        attempt,
                    )
                    return _Claim(kind="already", sent_at=row.sent_at, unconfirmed=True)
                if row.status == "sending":
                    # Claimed by an earlier attempt that never reached DATA: nothing left.
                    # Take the claim over (an earlier attempt still running finds it gone at
                    # its own hand-over and stops there).
                    row.attempt, row.subject = attempt, subject
                    return _Claim(kind="go")
            mailbox = await self._mailbox(session, campaign)
            sender_zone = _zone(mailbox.timezone) or dt.UTC
            today = now.astimezone(sender_zone).date()
            if row is not None and row.status == "reserved":
                if row.cap_day <= today:
                    row.status, row.attempt, row.subject = "sending", attempt, subject
                    await self._first_send(session, mailbox, today)
                    return _Claim(kind="go")
                return _Claim(
                    kind="deferred", retry_at=self._opening_on(input, row.cap_day, sender_zone)
                )
            # A new claim: today if the cap has room, else the next window day with room. One
            # conditional upsert per day takes a unit only while there is room, atomically, so
            # claims of one mailbox contend only on that day's counter, for one statement.
            candidate = now
            for _ in range(3 * 366):
                day = candidate.astimezone(sender_zone).date()
                cap = daily_cap(
                    mailbox.daily_limit,
                    mailbox.first_send_date,
                    day,
                    tuple(self._settings.campaign_warmup),
                )
                taken = None
                if cap > 0:
                    taken = await session.scalar(
                        insert(SenderDayUsage)
                        .values(sender_email=mailbox.email, day=day, used=1)
                        .on_conflict_do_update(
                            index_elements=[SenderDayUsage.sender_email, SenderDayUsage.day],
                            set_={"used": SenderDayUsage.used + 1},
                            where=SenderDayUsage.used < cap,
                        )
                        .returning(SenderDayUsage.used)
                    )
                if taken is not None:
                    now_or_later = "sending" if candidate is now else "reserved"
                    values = {
                        "campaign_id": input.campaign_id,
                        "contact_email": input.contact_email,
                        "step_index": input.step_index,
                        "variant": input.variant,
                        "sender_email": mailbox.email,
                        "cap_day": day,
                        "status": now_or_later,
                        "attempt": attempt,
                        "subject": subject,
                        "in_reply_to": input.references[-1] if input.references else None,
                        "requested_at": input.requested_at,
                    }
                    await session.execute(
                        insert(CampaignSend)
                        .values(message_id=input.message_id, **values)
                        .on_conflict_do_update(
                            index_elements=[CampaignSend.message_id], set_=values
                        )
                    )
                    if candidate is now:
                        await self._first_send(session, mailbox, today)
                        return _Claim(kind="go")
                    return _Claim(kind="deferred", retry_at=candidate)
                candidate = next_send_time(
                    candidate, 1, input.window.window(), input.timezone, input.country
                )
            raise ApplicationError(
                f"no day with room under {mailbox.email}'s daily cap within three years",
                type=NO_SEND_CAPACITY,
                non_retryable=True,
            )

    async def _first_send(
        self, session: AsyncSession, mailbox: SenderMailbox, today: dt.date
    ) -> None:
        # The warm-up ramp counts weeks from the mailbox's first real send.
        if mailbox.first_send_date is None:
            await session.execute(
                update(SenderMailbox)
                .where(
                    SenderMailbox.email == mailbox.email, SenderMailbox.first_send_date.is_(None)
                )
                .values(first_send_date=today)
            )

    def _opening_on(self, input: SendEmailInput, day: dt.date, zone: Any) -> dt.datetime:
        """The first window opening (contact's window) that falls on the sender's ``day``."""
        candidate = next_send_time(
            self._clock(), 0, input.window.window(), input.timezone, input.country
        )
        for _ in range(3 * 366):
            if candidate.astimezone(zone).date() >= day:
                return candidate
            candidate = next_send_time(
                candidate, 1, input.window.window(), input.timezone, input.country
            )
        return candidate

    async def _mailbox(self, session: AsyncSession, campaign: Campaign) -> SenderMailbox:
        """The sender's mailbox row (its limit, zone and first send), created if missing.

        Kept a few seconds once its first send is known: its limit changes only when a
        campaign launches, so a send may count against a limit that is seconds old.
        """
        cached = self._mailboxes.get(campaign.sender_email)
        if cached is not None and time_module.monotonic() - cached[0] < _MAILBOX_TTL_SECONDS:
            return cached[1]
        mailbox = await self._load_mailbox(session, campaign)
        if mailbox.first_send_date is not None:
            session.expunge(mailbox)
            self._mailboxes[campaign.sender_email] = (time_module.monotonic(), mailbox)
        return mailbox

    async def _load_mailbox(self, session: AsyncSession, campaign: Campaign) -> SenderMailbox:
        stmt = select(SenderMailbox).where(SenderMailbox.email == campaign.sender_email)
        mailbox = (await session.execute(stmt)).scalar_one_or_none()
        if mailbox is None:
            await session.execute(
                insert(SenderMailbox)
                .values(
                    email=campaign.sender_email,
                    daily_limit=campaign.sender_daily_limit,
                    timezone=campaign.sender_timezone,
                )
                .on_conflict_do_nothing()
            )
            mailbox = (await session.execute(stmt)).scalar_one()
        return mailbox

    async def _handing_over(self, message_id: str, attempt: int) -> None:
        """Commit "handing over" before DATA, if this attempt still owns the claim."""
        async with self._claims.begin() as session:
            result = await session.execute(
                update(CampaignSend)
                .where(
                    CampaignSend.message_id == message_id,
                    CampaignSend.status == "sending",
                    CampaignSend.attempt == attempt,
                )
                .values(status="handing_over")
            )
            if not result.rowcount:
                raise ClaimLost(f"send {message_id}: attempt {attempt} no longer owns the claim")

    async def _release(self, message_id: str) -> None:
        """SMTP explicitly refused (for now) what we offered: give the claim and its cap back."""
        async with self._claims.begin() as session:
            row = await session.get(CampaignSend, message_id, with_for_update=True)
            if row is None or row.status not in ("sending", "handing_over"):
                return
            row.status = "released"
            await session.execute(
                update(SenderDayUsage)
                .where(
                    SenderDayUsage.sender_email == row.sender_email,
                    SenderDayUsage.day == row.cap_day,
                    SenderDayUsage.used > 0,
                )
                .values(used=SenderDayUsage.used - 1)
            )

    async def _mark_failed(self, message_id: str) -> None:
        async with self._claims.begin() as session:
            await session.execute(
                update(CampaignSend)
                .where(CampaignSend.message_id == message_id)
                .values(status="failed", bounce_type="hard")
            )

    # --- the contact's record ----------------------------------------------------------------

    @activity.defn
    async def record_contact(self, input: RecordContactInput) -> None:
        """Mirror the sequence's state onto the contact row and append to its history.

        A stop written by a webhook is final: a later "active" from the sequence does not undo
        it (the sequence will hear of the stop itself).
        """
        self._crash.failures.check(
            "record_contact", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            contact = await campaigns_db.get_contact(
                session, campaign_id=input.campaign_id, email=input.contact_email, lock="update"
            )
            if contact is None:
                raise ApplicationError(
                    f"{input.contact_email} is not a contact of {input.campaign_id}",
                    type=CONTACT_NOT_FOUND,
                    non_retryable=True,
                )
            final = contact.status in ("stopped", "cancelled", "completed")
            if input.status is not None and (not final or input.status in ("stopped", "cancelled")):
                contact.status = input.status
            if input.status in ("stopped", "cancelled") and contact.hold is None:
                contact.hold, contact.hold_reason = "stopped", input.detail
            if input.outcome and not contact.outcome:
                contact.outcome = input.outcome
            if input.step_index is not None:
                contact.current_step = input.step_index
            contact.next_send_at = input.next_send_at
            if input.closed and contact.closed_at is None:
                contact.closed_at = input.at
            contact.updated_at = input.at
            await campaigns_db.append_event(
                session,
                campaign_id=input.campaign_id,
                contact_email=contact.email,
                event=input.event,
                step_index=input.step_index,
                detail=input.detail,
                at=input.at,
                idempotency_key=input.key,
            )

    # --- rep tasks ---------------------------------------------------------------------------

    @activity.defn
    async def create_task(self, input: CreateTaskInput) -> CreateTaskResult:
        """Create the rep's task for a LinkedIn or call step (once per task id)."""
        self._crash.failures.check(
            "create_task", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            existing = await session.get(RepTask, input.task_id)
            if existing is not None:
                return CreateTaskResult(
                    task_id=existing.id, title=existing.title, status=existing.status
                )
            campaign = await self._campaign(session, input.campaign_id)
            contact = await campaigns_db.get_contact(
                session, campaign_id=input.campaign_id, email=input.contact_email
            )
            if contact is None:
                raise ApplicationError(
                    f"{input.contact_email} is not a contact of {input.campaign_id}",
                    type=CONTACT_NOT_FOUND,
                    non_retryable=True,
                )
            who = _display_name(contact) + (f" ({contact.company})" if contact.company else "")
            verb = {"linkedin_task": "Connect on LinkedIn with", "call_task": "Call"}.get(
                input.kind, "Follow up with"
            )
            title = f"{verb} {who}"
            detail = None
            if input.step_index is not None:
                step = campaign.steps[input.step_index]
                sender = {"name": campaign.sender_name, "email": campaign.sender_email}
                ctx = contact_context(_contact_dict(contact), campaign.fallbacks or {}, sender)
                try:
                    if step.get("subject"):
                        title = render_part(step["subject"], ctx, "task title")
                    if step.get("body"):
                        detail = render_part(step["body"], ctx, "task detail")
                except MissingField as err:
                    detail = f"(template: {err})"
                except Exception as err:  # compiles, but raises on this contact's values
                    detail = f"({_template_error(err, f'step {input.step_index + 1}')})"
            await session.execute(
                insert(RepTask)
                .values(
                    id=input.task_id,
                    campaign_id=input.campaign_id,
                    contact_email=contact.email,
                    owner_email=input.owner_email,
                    kind=input.kind,
                    step_index=input.step_index,
                    title=title,
                    detail=detail,
                    status="open",
                    due_at=input.due_at,
                )
                .on_conflict_do_nothing()
            )
        return CreateTaskResult(task_id=input.task_id, title=title, status="open")

    @activity.defn
    async def complete_task(self, input: CompleteTaskInput) -> str:
        key = failure_key(input.campaign_id, input.contact_email) if input.campaign_id else None
        self._crash.failures.check("complete_task", key or input.task_id)
        async with self._sessions.begin() as session:
            task = await campaigns_db.complete_task(
                session, task_id=input.task_id, status=input.status, by=input.by
            )
            return task.status if task is not None else "missing"

    # --- replies and the rep -----------------------------------------------------------------

    @activity.defn
    async def route_reply(self, input: RouteReplyInput) -> RouteReplyResult:
        """The side effects of a reply: the rep's follow-up task, the referral, the message."""
        self._crash.failures.check(
            "route_reply", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            inbound = await session.get(InboundMessage, input.inbound_id)
            campaign = await self._campaign(session, input.campaign_id)
            contact = await campaigns_db.get_contact(
                session, campaign_id=input.campaign_id, email=input.contact_email, lock="update"
            )
            if inbound is None or contact is None:
                raise ApplicationError(
                    f"reply {input.inbound_id} or its contact is not recorded",
                    type=CONTACT_NOT_FOUND,
                    non_retryable=True,
                )
            task_id = None
            if input.record_referral and inbound.classification.get("referral"):
                contact.referral = inbound.classification["referral"]
                ref = contact.referral
                await campaigns_db.append_event(
                    session,
                    campaign_id=campaign.id,
                    contact_email=contact.email,
                    event="referral.recorded",
                    detail=f"{ref.get('name') or '?'} <{ref.get('email') or '?'}>",
                    idempotency_key=f"referral/{inbound.id}",
                )
            who = _display_name(contact) + (f" ({contact.company})" if contact.company else "")
            if input.create_task:
                task_id = task_id_for("reply", inbound.id)
                await session.execute(
                    insert(RepTask)
                    .values(
                        id=task_id,
                        campaign_id=campaign.id,
                        contact_email=contact.email,
                        owner_email=input.owner_email,
                        kind="follow_up",
                        title=f"Reply to {who}: {input.kind.replace('_', ' ')}",
                        detail=inbound.text,
                        status="open",
                    )
                    .on_conflict_do_nothing()
                )
            text = None
            if input.notify:
                sends = await campaigns_db.contact_sends(
                    session, campaign_id=campaign.id, email=contact.email
                )
                thread = "\n".join(
                    f"• step {s.step_index + 1}: “{s.subject}” sent {s.sent_at:%Y-%m-%d %H:%M} UTC"
                    for s in sends
                    if s.status in campaigns_db.SENT_STATUSES and s.sent_at
                )
                quoted = "\n".join(f"> {line}" for line in (inbound.text or "").splitlines()[:12])
                text = (
                    f"*{input.kind.replace('_', ' ').capitalize()}* reply from {who} "
                    f"<{contact.email}> to “{campaign.name}” (rule `{inbound.rule}`)\n"
                    f"{quoted}\n"
                    f"Thread:\n{thread}\n"
                    f"• reply “{inbound.subject or ''}” received "
                    f"{inbound.received_at:%Y-%m-%d %H:%M} UTC\n"
                    f"Sequence stopped. {self._settings.public_base_url}/v1/campaigns/"
                    f"{campaign.id}/contacts/{contact.email}"
                    + (f"\nA follow-up task was created ({task_id})." if task_id else "")
                    + (
                        "\n*One call away from a deal:* `POST "
                        f"{self._settings.public_base_url}/v1/campaigns/{campaign.id}/contacts/"
                        f"{contact.email}/deal` makes a draft deal with them as the signer."
                        if input.kind in ONE_CALL_AWAY
                        else ""
                    )
                )
        return RouteReplyResult(notification=text, task_id=task_id)

    @activity.defn
    async def record_attention(self, input: RecordAttentionInput) -> bool:
        """Record (or clear) a park in needs_attention, so the API's reads and counts show it.

        The workflow's own status (query) and its search attribute already show the park; this
        is the copy the tables answer from. Idempotent: it writes the same value again.
        """
        self._crash.failures.check(
            "record_attention", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            return await campaigns_db.set_attention(
                session,
                campaign_id=input.campaign_id,
                contact_email=input.contact_email,
                attention=input.attention.model_dump(mode="json") if input.attention else None,
            )

    @activity.defn
    async def notify_rep(self, input: NotifyRepInput) -> bool:
        """Record what we tell the rep, and post it to them on Slack (once per key)."""
        self._crash.failures.check(
            "notify_rep", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            await session.execute(
                insert(RepNotification)
                .values(
                    id=input.key,
                    campaign_id=input.campaign_id,
                    contact_email=input.contact_email,
                    owner_email=input.owner_email,
                    kind=input.kind,
                    text=input.text,
                )
                .on_conflict_do_nothing()
            )
            note = await session.get(RepNotification, input.key, with_for_update=True)
            person = await session.get(Person, input.owner_email)
            if note is None or note.posted or self._slack is None:
                return bool(note and note.posted)
            if not self._settings.campaign_slack_enabled or not (person and person.slack_user_id):
                return False
            resp = await self._slack.chat_postMessage(channel=person.slack_user_id, text=input.text)
            note.posted = True
            note.slack_channel = resp.get("channel")
            note.slack_ts = resp.get("ts")
            return True


def build_campaign_activities(
    settings: Settings, sessions: async_sessionmaker, crash_points: CrashPoints
) -> list:
    """The campaign activities with their collaborators, for worker.py."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from db.engine import make_sessionmaker, sqlalchemy_url

    # The claims pool: two short transactions per send, never held across SMTP. No pre-ping:
    # a connection that died is an error the activity retries, not worth a round trip each.
    claims_engine = create_async_engine(
        sqlalchemy_url(settings.require_database_url()), pool_size=8, max_overflow=8
    )
    campaigns = CampaignActivities(
        settings=settings,
        sessions=sessions,
        claims=make_sessionmaker(claims_engine),
        mailer=SmtpMailer.from_settings(settings),
        layout=EmailLayout(settings.templates_dir),
        slack=AsyncWebClient(
            token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url
        ),
        crash_points=crash_points,
    )
    return [
        campaigns.preflight,
        campaigns.enrol_batch,
        campaigns.broadcast_state,
        campaigns.campaign_progress,
        campaigns.check_bounce_rate,
        campaigns.finish_campaign,
        campaigns.send_email,
        campaigns.record_contact,
        campaigns.create_task,
        campaigns.complete_task,
        campaigns.route_reply,
        campaigns.notify_rep,
        campaigns.record_attention,
    ]
