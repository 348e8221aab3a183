"""The per-contact SQL: the locked read before a send, the send's claim and the sender's daily
cap, the hand-over mark, what the send writes after SMTP; the rep's tasks and notifications.

The protocol these keep (at most one copy per Message-ID, no send after an acknowledged pause,
one cap shared by every campaign of a sender) is written out in ``activities/sequence.py``,
``SequenceActivities.send_email``; this module is its statements. The claim's functions run on
the small claims pool and commit at once; the rest run in the send's own transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from db import campaigns as campaigns_db
from db.campaign_models import (
    Campaign,
    CampaignContact,
    CampaignSend,
    ContactEvent,
    InboundMessage,
    RepNotification,
    RepTask,
    SenderDayUsage,
    SenderMailbox,
)
from db.models import Person
from domain.schedule import daily_cap
from messages.campaign import RecordContactInput

log = logging.getLogger(__name__)

# How far ahead a claim looks for a day with room under the sender's cap.
CLAIM_HORIZON_DAYS = 3 * 366


async def campaign_for_send(session: AsyncSession, *, campaign_id: str) -> Campaign | None:
    """The campaign's status lock (shared), then its row, without the report columns a send
    never reads (the preflight report lists up to 1,000 excluded contacts)."""
    await campaigns_db.lock_campaign_status(session, campaign_id=campaign_id, exclusive=False)
    return (
        await session.execute(
            select(Campaign)
            .where(Campaign.id == campaign_id)
            .options(defer(Campaign.preflight), defer(Campaign.duplicates))
        )
    ).scalar_one_or_none()


async def contact_for_send(
    session: AsyncSession, *, campaign_id: str, email: str, sender_email: str
) -> tuple[CampaignContact, str | None] | None:
    """The contact, locked ``FOR UPDATE``, and its suppression reason for this sender (or None).

    FOR UPDATE, not FOR SHARE: the send writes the row at the end, and upgrading a share lock
    while a webhook's UPDATE waits for it is a deadlock. Only this contact's own sequence sends
    to it, so nothing else waits for long.
    """
    found = (
        await session.execute(
            select(
                CampaignContact,
                campaigns_db.suppression_reason_of(
                    CampaignContact.email, CampaignContact.domain, sender_email
                ),
            )
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.email == campaigns_db.normalize_email(email),
            )
            .with_for_update(of=CampaignContact)
        )
    ).one_or_none()
    return (found[0], found[1]) if found is not None else None


@dataclass(frozen=True)
class Claim:
    """What the claim found: send now, already sent, deferred to a reserved day, or refused."""

    kind: Literal["go", "already", "deferred", "failed", "reserved"]
    retry_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    unconfirmed: bool = False
    row: CampaignSend | None = None  # reserved: the locked send row, its unit on ``cap_day``


async def existing_claim(
    session: AsyncSession, *, message_id: str, subject: str, now: dt.datetime, attempt: int
) -> Claim | None:
    """The send row of this Message-ID, if an earlier attempt left one, and what it means.

    None: no row, or a released one (a new claim is needed). ``reserved``: a unit is waiting on
    ``cap_day`` (the caller decides whether that day has come).
    """
    row = await session.get(CampaignSend, message_id, with_for_update=True)
    if row is None:
        return None
    if row.status == "sent":
        return Claim(kind="already", sent_at=row.sent_at)
    if row.status == "unconfirmed":
        return Claim(kind="already", sent_at=row.sent_at, unconfirmed=True)
    if row.status == "failed":
        return Claim(kind="failed")
    if row.status == "handing_over":
        # An earlier attempt started handing the message over and never recorded the answer:
        # the server may have kept it. Never risk a second copy.
        row.status = "unconfirmed"
        row.sent_at = row.sent_at or now
        log.warning(
            "send %s left mid-hand-over by attempt %d (now %d): recorded unconfirmed",
            message_id,
            row.attempt,
            attempt,
        )
        return Claim(kind="already", sent_at=row.sent_at, unconfirmed=True)
    if row.status == "sending":
        # Claimed by an earlier attempt that never reached DATA: nothing left. Take the claim
        # over (an earlier attempt still running finds it gone at its own hand-over and stops).
        row.attempt, row.subject = attempt, subject
        return Claim(kind="go")
    if row.status == "reserved":
        return Claim(kind="reserved", row=row)
    return None


def take_reserved(row: CampaignSend, *, subject: str, attempt: int) -> None:
    """A reserved send whose day has come (its row locked by ``existing_claim``): this attempt
    sends it."""
    row.status, row.attempt, row.subject = "sending", attempt, subject


async def claim_new(
    session: AsyncSession,
    *,
    message_id: str,
    values: dict[str, Any],
    mailbox: SenderMailbox,
    now: dt.datetime,
    zone: dt.tzinfo,
    warmup: Sequence[Any],
    next_opening: Callable[[dt.datetime], dt.datetime],
) -> Claim | None:
    """A new claim: today if the cap has room, else the next window day with room.

    One conditional upsert per day takes a unit only while there is room, atomically, so claims
    of one mailbox contend only on that day's counter, for one statement. ``values`` are the
    send row's columns besides the Message-ID, sender, day and status; ``next_opening`` is the
    contact's next window opening after an instant. None: no room within the horizon.
    """
    candidate = now
    for _ in range(CLAIM_HORIZON_DAYS):
        day = candidate.astimezone(zone).date()
        cap = daily_cap(mailbox.daily_limit, mailbox.first_send_date, day, tuple(warmup))
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
            row = {
                **values,
                "sender_email": mailbox.email,
                "cap_day": day,
                "status": "sending" if candidate is now else "reserved",
            }
            await session.execute(
                insert(CampaignSend)
                .values(message_id=message_id, **row)
                .on_conflict_do_update(index_elements=[CampaignSend.message_id], set_=row)
            )
            if candidate is now:
                return Claim(kind="go")
            return Claim(kind="deferred", retry_at=candidate)
        candidate = next_opening(candidate)
    return None


class MailboxCache:
    """The sender mailboxes' rows, kept a few seconds once their first send is known.

    A mailbox's limit changes only when a campaign launches, so a send may count against a limit
    that is seconds old; the cap's counter itself is never cached.
    """

    TTL_SECONDS = 5.0

    def __init__(self) -> None:
        self._rows: dict[str, tuple[float, SenderMailbox]] = {}

    async def get(self, session: AsyncSession, campaign: Campaign) -> SenderMailbox:
        """The sender's mailbox row (its limit, zone and first send), created if missing."""
        cached = self._rows.get(campaign.sender_email)
        if cached is not None and time.monotonic() - cached[0] < self.TTL_SECONDS:
            return cached[1]
        mailbox = await load_mailbox(session, campaign)
        if mailbox.first_send_date is not None:
            session.expunge(mailbox)
            self._rows[campaign.sender_email] = (time.monotonic(), mailbox)
        return mailbox


async def mark_first_send(session: AsyncSession, mailbox: SenderMailbox, today: dt.date) -> None:
    """The warm-up ramp counts weeks from the mailbox's first real send."""
    if mailbox.first_send_date is None:
        await session.execute(
            update(SenderMailbox)
            .where(SenderMailbox.email == mailbox.email, SenderMailbox.first_send_date.is_(None))
            .values(first_send_date=today)
        )


async def load_mailbox(session: AsyncSession, campaign: Campaign) -> SenderMailbox:
    """The sender's mailbox row (its limit, zone and first send), created if missing."""
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


async def mark_handing_over(session: AsyncSession, *, message_id: str, attempt: int) -> bool:
    """Mark the send ``handing_over``, if this attempt still owns the claim (False: it lost it)."""
    result = await session.execute(
        update(CampaignSend)
        .where(
            CampaignSend.message_id == message_id,
            CampaignSend.status == "sending",
            CampaignSend.attempt == attempt,
        )
        .values(status="handing_over")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release_claim(session: AsyncSession, *, message_id: str) -> None:
    """SMTP explicitly refused (for now) what we offered: give the claim and its cap back."""
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


async def mark_failed(session: AsyncSession, *, message_id: str) -> None:
    """The recipient's server refused the address for good."""
    await session.execute(
        update(CampaignSend)
        .where(CampaignSend.message_id == message_id)
        .values(status="failed", bounce_type="hard")
    )


async def mark_sent(session: AsyncSession, *, message_id: str, sent_at: dt.datetime) -> None:
    await session.execute(
        update(CampaignSend)
        .where(CampaignSend.message_id == message_id)
        .values(status="sent", sent_at=sent_at)
    )


async def mirror_contact(session: AsyncSession, input: RecordContactInput) -> bool:
    """Mirror the sequence's state onto the contact row and append to its history (False: no
    such contact). A stop written by a webhook is final: a later "active" from the sequence does
    not undo it (the sequence will hear of the stop itself)."""
    contact = await campaigns_db.get_contact(
        session, campaign_id=input.campaign_id, email=input.contact_email, lock="update"
    )
    if contact is None:
        return False
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
    return True


async def record_referral(
    session: AsyncSession, contact: CampaignContact, inbound: InboundMessage
) -> None:
    """The person a referral reply names, on the contact and in its history (once a reply)."""
    if not inbound.classification.get("referral"):
        return
    contact.referral = inbound.classification["referral"]
    ref = contact.referral
    await campaigns_db.append_event(
        session,
        campaign_id=contact.campaign_id,
        contact_email=contact.email,
        event="referral.recorded",
        detail=f"{ref.get('name') or '?'} <{ref.get('email') or '?'}>",
        idempotency_key=f"referral/{inbound.id}",
    )


# --- the contact's history and sends, as the reads show them ---------------------------------


async def contact_history(
    session: AsyncSession, *, campaign_id: str, email: str
) -> list[ContactEvent]:
    stmt = (
        select(ContactEvent)
        .where(
            ContactEvent.campaign_id == campaign_id,
            ContactEvent.contact_email == campaigns_db.normalize_email(email),
        )
        .order_by(ContactEvent.at, ContactEvent.id)
    )
    return list((await session.execute(stmt)).scalars())


async def contact_sends(
    session: AsyncSession, *, campaign_id: str, email: str
) -> list[CampaignSend]:
    stmt = (
        select(CampaignSend)
        .where(
            CampaignSend.campaign_id == campaign_id,
            CampaignSend.contact_email == campaigns_db.normalize_email(email),
        )
        .order_by(CampaignSend.step_index)
    )
    return list((await session.execute(stmt)).scalars())


# --- the rep's tasks and notifications ----------------------------------------------------------


async def insert_task(session: AsyncSession, **values: Any) -> None:
    """A rep task, once per id (a retried create converges on the first one)."""
    await session.execute(insert(RepTask).values(status="open", **values).on_conflict_do_nothing())


async def record_notification(
    session: AsyncSession,
    *,
    key: str,
    campaign_id: str,
    contact_email: str | None,
    owner_email: str,
    kind: str,
    text: str,
) -> tuple[RepNotification | None, Person | None]:
    """What we tell the rep, recorded once per key, locked; and the rep (for their Slack id)."""
    await session.execute(
        insert(RepNotification)
        .values(
            id=key,
            campaign_id=campaign_id,
            contact_email=contact_email,
            owner_email=owner_email,
            kind=kind,
            text=text,
        )
        .on_conflict_do_nothing()
    )
    note = await session.get(RepNotification, key, with_for_update=True)
    return note, await session.get(Person, owner_email)


async def complete_task(
    session: AsyncSession, *, task_id: str, status: str, by: str | None
) -> RepTask | None:
    task = await session.get(RepTask, task_id, with_for_update=True)
    if task is None:
        return None
    if task.status == "open":
        task.status = status
        task.done_at = campaigns_db.now_utc()
        task.done_by = by
        await session.flush()
    return task
