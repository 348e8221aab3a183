"""Activities of a campaign as a whole: preflight, enrolment, the state broadcast, progress,
the bounce-rate check, the finish and the park's record (``workflows/campaign.py``).

Every activity is safe to retry. The per-contact ones (the send, tasks, replies, the rep's
notifications) are ``activities/sequence.py``; the helpers at the top serve both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from db import campaigns as campaigns_db
from db.campaign_models import Campaign, CampaignContact
from dealflow.faults import CrashPoints
from dealflow.ids import SA_CAMPAIGN_ID, failure_key, sequence_workflow_id
from dealflow.settings import Settings
from domain.campaign_email import (
    MissingField,
    contact_context,
    render_step,
    template_error,
    variant_names,
)
from domain.campaign_rules import known_zone
from messages.campaign import (
    CAMPAIGN_NOT_FOUND,
    SEQUENCE_WORKFLOW_TYPE,
    BounceCheckInput,
    BounceCheckResult,
    BroadcastInput,
    CampaignRef,
    CampaignState,
    EnrolBatchInput,
    EnrolBatchResult,
    FinishCampaignInput,
    PreflightResult,
    ProgressResult,
    RecordAttentionInput,
    SequenceInput,
    step_plans,
)

# How many sequence starts / signals an activity keeps in flight against the Temporal server.
_FANOUT = 32
_PREFLIGHT_PAGE = 1000


# --- shared by the campaign's and the sequence's activities -----------------------------------


def campaign_missing(campaign_id: str) -> ApplicationError:
    return ApplicationError(
        f"campaign {campaign_id} does not exist", type=CAMPAIGN_NOT_FOUND, non_retryable=True
    )


async def campaign_or_fail(
    session: AsyncSession, campaign_id: str, lock: str | None = None
) -> Campaign:
    """The campaign's row, or the non-retryable CampaignNotFound the workflows match on."""
    campaign = await campaigns_db.get_campaign(session, campaign_id=campaign_id, lock=lock)
    if campaign is None:
        raise campaign_missing(campaign_id)
    return campaign


def campaign_state(campaign: Campaign) -> CampaignState:
    """The campaign's state as the sequences know it (the row's status and version)."""
    return CampaignState(
        status=campaign.status, version=campaign.state_version, reason=campaign.status_reason
    )


def contact_dict(c: CampaignContact) -> dict[str, Any]:
    """A contact's fields as the step templates see them (``contact_context``)."""
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


def sender_of(campaign: Campaign) -> dict[str, str]:
    """The campaign's sender as the step templates see it (``{{ sender.name }}``)."""
    return {"name": campaign.sender_name, "email": campaign.sender_email}


def person_name(c: CampaignContact) -> str | None:
    return " ".join(p for p in (c.first_name, c.last_name) if p) or None


def contact_label(c: CampaignContact) -> str:
    """The contact as a rep reads it: name (or address), and company."""
    return (person_name(c) or c.email) + (f" ({c.company})" if c.company else "")


class CampaignActivities:
    """Built once in worker.py with its collaborators; tests build it the same way."""

    def __init__(
        self, *, settings: Settings, sessions: async_sessionmaker, crash_points: CrashPoints
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._crash = crash_points

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
        if known_zone(campaign.sender_timezone) is None:
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
            campaign = await campaign_or_fail(session, input.campaign_id)
            problems = self._sender_problems(campaign)
        sender = sender_of(campaign)
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
        if known_zone(contact.timezone) is None:
            return f"unknown time zone {contact.timezone!r}", "invalid_timezone"
        if contact.email in suppressed:
            why = suppressed[contact.email]
            return f"suppressed: {why}", f"suppressed:{why}"
        ctx = contact_context(contact_dict(contact), campaign.fallbacks or {}, sender)
        for i, step in enumerate(campaign.steps):
            variants = variant_names(step) or [None]
            for variant in variants:
                try:
                    render_step(step, i, variant, ctx)
                except MissingField as err:
                    return str(err), f"missing_field:{err.field}"
                except Exception as err:  # compiles, but raises on this contact's values
                    where = f"step {i + 1}" + (f" (variant {variant})" if variant else "")
                    return template_error(err, where), "template_error"
        return None, ""

    async def _write_report(
        self, campaign_id: str, problems: list[str], by_reason: dict[str, int]
    ) -> PreflightResult:
        async with self._sessions.begin() as session:
            campaign = await campaign_or_fail(session, campaign_id, lock="update")
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
            campaign = await campaign_or_fail(session, input.campaign_id)
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
            campaign = await campaign_or_fail(session, input.campaign_id)
            open_count = await campaigns_db.open_contact_count(
                session, campaign_id=input.campaign_id
            )
        return ProgressResult(
            open=open_count,
            state=campaign_state(campaign),
        )

    @activity.defn
    async def check_bounce_rate(self, input: BounceCheckInput) -> BounceCheckResult:
        """Pause the campaign when its hard-bounce rate passes the threshold (enough sends)."""
        self._crash.failures.check("check_bounce_rate", input.campaign_id)
        async with self._sessions.begin() as session:
            campaign = await campaign_or_fail(session, input.campaign_id)
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
            state=campaign_state(campaign),
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
            campaign = await campaign_or_fail(session, input.campaign_id)
            await session.refresh(campaign)
            return campaign_state(campaign)

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
