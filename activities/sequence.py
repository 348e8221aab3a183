"""Activities of one contact's sequence: the send, the contact's record, rep tasks, replies and
the rep's notifications (``workflows/sequence.py``; ``notify_rep`` serves the campaign too).

Every activity is safe to retry. The one that matters most is :meth:`SequenceActivities.send_email`;
how it keeps its two promises is written out there. Its statements are ``db/sequences.py``, the
message it sends is composed by ``domain/campaign_email.py``, and ``integrations/smtp.py`` hands
it over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from email.message import Message
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.campaigns import (
    campaign_missing,
    campaign_or_fail,
    campaign_state,
    contact_dict,
    contact_label,
    person_name,
    sender_of,
)
from db import campaigns as campaigns_db
from db import sequences as sequences_db
from db.campaign_models import Campaign, CampaignContact, InboundMessage, RepTask
from dealflow.faults import CrashPoints
from dealflow.ids import failure_key, task_id_for
from dealflow.settings import Settings
from domain.campaign_email import (
    EmailLayout,
    MissingField,
    campaign_message,
    contact_context,
    render_step,
    task_text,
    template_error,
)
from domain.campaign_rules import opening_on, reply_notification, sender_zone
from domain.schedule import next_send_time
from integrations.smtp import SmtpAmbiguous, SmtpMailer, SmtpRejected, SmtpTransient
from messages.campaign import (
    CONTACT_NOT_FOUND,
    NO_SEND_CAPACITY,
    CompleteTaskInput,
    CreateTaskInput,
    CreateTaskResult,
    NotifyRepInput,
    RecordContactInput,
    RouteReplyInput,
    RouteReplyResult,
    SendEmailInput,
    SendEmailResult,
)


class ClaimLost(RuntimeError):
    """A later attempt of the same send took the claim over; this one must not send."""


def _no_contact(input: Any) -> ApplicationError:
    return ApplicationError(
        f"{input.contact_email} is not a contact of {input.campaign_id}",
        type=CONTACT_NOT_FOUND,
        non_retryable=True,
    )


class SequenceActivities:
    """Built once in worker.py with its collaborators; tests build it the same way.

    ``claims`` is a second, small connection pool (built in worker.py) used only for the send's
    claim (see :meth:`send_email`); keeping it apart from ``sessions`` means a send never waits
    for a connection while holding one, so the two pools cannot starve each other. ``mailer`` is
    the worker's one SMTP transport (``integrations.smtp``).
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
        self._mailboxes = sequences_db.MailboxCache()
        self._settings = settings
        self._sessions = sessions
        self._claims = claims
        self._mailer = mailer
        self._layout = layout
        self._slack = slack
        self._crash = crash_points

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
            # 1-2: the campaign (status lock shared) and the contact (row lock).
            campaign = await sequences_db.campaign_for_send(session, campaign_id=input.campaign_id)
            if campaign is None:
                raise campaign_missing(input.campaign_id)
            state = campaign_state(campaign)
            if campaign.status == "cancelled":
                return SendEmailResult(outcome="campaign_cancelled", state=state)
            if campaign.status != "active":
                return SendEmailResult(outcome="campaign_paused", state=state)
            found = await sequences_db.contact_for_send(
                session,
                campaign_id=input.campaign_id,
                email=input.contact_email,
                sender_email=campaign.sender_email,
            )
            if found is None:
                raise _no_contact(input)
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
            # The step's content for this contact (a template that fails stops the contact).
            step = campaign.steps[input.step_index]
            ctx = contact_context(
                contact_dict(contact), campaign.fallbacks or {}, sender_of(campaign)
            )
            try:
                content = render_step(step, input.step_index, input.variant, ctx)
            except MissingField as err:
                return await self._stop_at_send(session, contact, str(err), "template_error", input)
            except Exception as err:  # compiles, but raises on this contact's values
                reason = template_error(err, f"step {input.step_index + 1}")
                return await self._stop_at_send(session, contact, reason, "template_error", input)
            subject = content.subject or (
                f"Re: {input.thread_subject}" if input.thread_subject else campaign.name
            )

            # 3: the claim.
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

            # 4: SMTP.
            message = campaign_message(
                self._layout,
                signing_key=self._settings.secret("link_signing_key"),
                base_url=self._settings.public_base_url,
                postal_address=self._settings.campaign_postal_address,
                campaign_id=campaign.id,
                sender=(campaign.sender_name, campaign.sender_email),
                to=(person_name(contact), contact.email),
                subject=subject,
                body_text=content.text,
                message_id=input.message_id,
                references=input.references,
                date=now,
            )
            refused = await self._hand_over(session, input, campaign, contact, message, attempt)
            if refused is not None:
                return refused
            self._crash.checkpoint("send_email.after_smtp")

            # 5: the record.
            sent_at = self._clock()
            await sequences_db.mark_sent(session, message_id=input.message_id, sent_at=sent_at)
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

    async def _hand_over(
        self,
        session: AsyncSession,
        input: SendEmailInput,
        campaign: Campaign,
        contact: CampaignContact,
        message: Message,
        attempt: int,
    ) -> SendEmailResult | None:
        """SMTP, with the hand-over mark right before DATA. None: the server took the message;
        a result: it refused the address for good (the contact stops)."""
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
            async with self._claims.begin() as claims:
                await sequences_db.release_claim(claims, message_id=input.message_id)
            raise
        except SmtpRejected as err:
            async with self._claims.begin() as claims:
                await sequences_db.mark_failed(claims, message_id=input.message_id)
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
        return None

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
    ) -> sequences_db.Claim:
        """Claim the send (and a unit of the sender's cap) on the claims pool, committed now."""
        async with self._claims.begin() as session:
            found = await sequences_db.existing_claim(
                session, message_id=input.message_id, subject=subject, now=now, attempt=attempt
            )
            if found is not None and found.kind != "reserved":
                return found
            mailbox = await self._mailboxes.get(session, campaign)
            zone = sender_zone(mailbox.timezone)
            today = now.astimezone(zone).date()
            window = input.window.window()
            if found is not None and found.row is not None:  # reserved
                if found.row.cap_day <= today:
                    sequences_db.take_reserved(found.row, subject=subject, attempt=attempt)
                    await sequences_db.mark_first_send(session, mailbox, today)
                    return sequences_db.Claim(kind="go")
                retry_at = opening_on(
                    self._clock(), found.row.cap_day, window, input.timezone, input.country, zone
                )
                return sequences_db.Claim(kind="deferred", retry_at=retry_at)
            claim = await sequences_db.claim_new(
                session,
                message_id=input.message_id,
                values={
                    "campaign_id": input.campaign_id,
                    "contact_email": input.contact_email,
                    "step_index": input.step_index,
                    "variant": input.variant,
                    "attempt": attempt,
                    "subject": subject,
                    "in_reply_to": input.references[-1] if input.references else None,
                    "requested_at": input.requested_at,
                },
                mailbox=mailbox,
                now=now,
                zone=zone,
                warmup=self._settings.campaign_warmup,
                next_opening=lambda after: next_send_time(
                    after, 1, window, input.timezone, input.country
                ),
            )
            if claim is None:
                raise ApplicationError(
                    f"no day with room under {mailbox.email}'s daily cap within three years",
                    type=NO_SEND_CAPACITY,
                    non_retryable=True,
                )
            if claim.kind == "go":
                await sequences_db.mark_first_send(session, mailbox, today)
            return claim

    async def _handing_over(self, message_id: str, attempt: int) -> None:
        """Commit "handing over" before DATA, if this attempt still owns the claim."""
        async with self._claims.begin() as session:
            if not await sequences_db.mark_handing_over(
                session, message_id=message_id, attempt=attempt
            ):
                raise ClaimLost(f"send {message_id}: attempt {attempt} no longer owns the claim")

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
            if not await sequences_db.mirror_contact(session, input):
                raise _no_contact(input)

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
            campaign = await campaign_or_fail(session, input.campaign_id)
            contact = await campaigns_db.get_contact(
                session, campaign_id=input.campaign_id, email=input.contact_email
            )
            if contact is None:
                raise _no_contact(input)
            title, detail = task_text(
                campaign.steps[input.step_index] if input.step_index is not None else None,
                input.step_index,
                kind=input.kind,
                who=contact_label(contact),
                ctx=contact_context(
                    contact_dict(contact),
                    campaign.fallbacks or {},
                    sender_of(campaign),
                ),
            )
            await sequences_db.insert_task(
                session,
                id=input.task_id,
                campaign_id=input.campaign_id,
                contact_email=contact.email,
                owner_email=input.owner_email,
                kind=input.kind,
                step_index=input.step_index,
                title=title,
                detail=detail,
                due_at=input.due_at,
            )
        return CreateTaskResult(task_id=input.task_id, title=title, status="open")

    @activity.defn
    async def complete_task(self, input: CompleteTaskInput) -> str:
        key = failure_key(input.campaign_id, input.contact_email) if input.campaign_id else None
        self._crash.failures.check("complete_task", key or input.task_id)
        async with self._sessions.begin() as session:
            task = await sequences_db.complete_task(
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
            campaign = await campaign_or_fail(session, input.campaign_id)
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
            if input.record_referral:
                await sequences_db.record_referral(session, contact, inbound)
            who = contact_label(contact)
            if input.create_task:
                task_id = task_id_for("reply", inbound.id)
                await sequences_db.insert_task(
                    session,
                    id=task_id,
                    campaign_id=campaign.id,
                    contact_email=contact.email,
                    owner_email=input.owner_email,
                    kind="follow_up",
                    title=f"Reply to {who}: {input.kind.replace('_', ' ')}",
                    detail=inbound.text,
                )
            text = None
            if input.notify:
                sends = await sequences_db.contact_sends(
                    session, campaign_id=campaign.id, email=contact.email
                )
                text = reply_notification(
                    kind=input.kind,
                    who=who,
                    contact_email=contact.email,
                    campaign_id=campaign.id,
                    campaign_name=campaign.name,
                    rule=inbound.rule,
                    reply_text=inbound.text,
                    reply_subject=inbound.subject,
                    received_at=inbound.received_at,
                    sent=[
                        (s.step_index, s.subject, s.sent_at)
                        for s in sends
                        if s.status in campaigns_db.SENT_STATUSES and s.sent_at
                    ],
                    task_id=task_id,
                    base_url=self._settings.public_base_url,
                )
        return RouteReplyResult(notification=text, task_id=task_id)

    @activity.defn
    async def notify_rep(self, input: NotifyRepInput) -> bool:
        """Record what we tell the rep, and post it to them on Slack (once per key)."""
        self._crash.failures.check(
            "notify_rep", failure_key(input.campaign_id, input.contact_email)
        )
        async with self._sessions.begin() as session:
            note, person = await sequences_db.record_notification(
                session,
                key=input.key,
                campaign_id=input.campaign_id,
                contact_email=input.contact_email,
                owner_email=input.owner_email,
                kind=input.kind,
                text=input.text,
            )
            if note is None or note.posted or self._slack is None:
                return bool(note and note.posted)
            if not self._settings.campaign_slack_enabled or not (person and person.slack_user_id):
                return False
            resp = await self._slack.chat_postMessage(channel=person.slack_user_id, text=input.text)
            note.posted = True
            note.slack_channel = resp.get("channel")
            note.slack_ts = resp.get("ts")
            return True
