"""Campaigns, their contacts, sends, replies, delivery events and suppressions.

Functions take keyword arguments and a session; the caller owns the transaction. The ones the
webhooks call (``record_reply``, ``record_delivery_event``, ``unsubscribe``) write the contact's
*hold* in the caller's transaction, so once the webhook has answered, every later send sees it
(the send reads the hold ``FOR UPDATE``; see activities/sequence.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.campaign_models import (
    Campaign,
    CampaignContact,
    CampaignSend,
    ContactEvent,
    DeliveryEvent,
    InboundMessage,
    SenderMailbox,
    Suppression,
)

# Kinds of inbound mail that are a person answering (not a machine): they count as replies.
HUMAN_KINDS = frozenset(
    {
        "interested",
        "meeting_request",
        "not_interested",
        "referral",
        "question",
        "objection",
        "other",
        "unsubscribe",
    }
)
POSITIVE_KINDS = frozenset({"interested", "meeting_request"})
SENT_STATUSES = ("sent", "unconfirmed")
OPEN_CONTACT_STATUSES = ("enrolled", "active", "waiting", "paused")
# Campaign statuses in which its workflow runs (and so can be parked in needs_attention).
RUNNING_STATUSES = ("active", "paused")
# Webmail domains: two contacts on gmail.com are not colleagues.
FREEMAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.de",
        "web.de",
        "mail.com",
    }
)
_CHUNK = 2000


def new_campaign_id() -> str:
    return f"cmp_{uuid.uuid4().hex[:20]}"


def new_inbound_id() -> str:
    return f"inb_{uuid.uuid4().hex[:20]}"


def normalize_email(email: str) -> str:
    return email.strip().lower()


def email_domain(email: str) -> str:
    return email.rsplit("@", 1)[-1].strip().lower()


def company_key(company: str | None, email: str) -> str:
    name = " ".join((company or "").split()).lower()
    return name or email_domain(email)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- create and read --------------------------------------------------------------------------


def merge_contacts(contacts: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Contacts with duplicates merged (same address, any case), and what was merged.

    The first occurrence wins; later ones only fill the fields it lacks.
    """
    merged: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for contact in contacts:
        email = normalize_email(contact["email"])
        seen[email] = seen.get(email, 0) + 1
        current = merged.get(email)
        if current is None:
            merged[email] = {**contact, "email": email, "fields": dict(contact.get("fields") or {})}
            continue
        for key, value in contact.items():
            if key == "fields":
                for name, v in (value or {}).items():
                    current["fields"].setdefault(name, v)
            elif current.get(key) in (None, "") and value not in (None, ""):
                current[key] = value
    duplicates = [{"email": e, "occurrences": n} for e, n in seen.items() if n > 1]
    return list(merged.values()), duplicates


async def create_campaign(
    session: AsyncSession,
    *,
    owner_email: str,
    name: str,
    sender: dict[str, Any],
    steps: list[dict[str, Any]],
    contacts: list[dict[str, Any]],
    fallbacks: dict[str, Any],
    options: dict[str, Any],
) -> Campaign:
    """Insert a draft campaign and its contacts (duplicates merged)."""
    unique, duplicates = merge_contacts(contacts)
    campaign = Campaign(
        id=new_campaign_id(),
        owner_email=owner_email,
        name=name,
        status="draft",
        state_version=0,
        sender_email=normalize_email(sender["email"]),
        sender_name=sender["name"],
        sender_daily_limit=sender["daily_limit"],
        sender_timezone=sender["timezone"],
        steps=steps,
        fallbacks=fallbacks,
        options=options,
        duplicates=duplicates,
        contact_count=len(unique),
    )
    session.add(campaign)
    await session.flush()
    rows = [
        {
            "campaign_id": campaign.id,
            "position": i + 1,
            "email": c["email"],
            "domain": email_domain(c["email"]),
            "first_name": c.get("first_name"),
            "last_name": c.get("last_name"),
            "company": c.get("company"),
            "title": c.get("title"),
            "timezone": c["timezone"],
            "country": c.get("country"),
            "fields": c.get("fields") or {},
            "company_key": company_key(c.get("company"), c["email"]),
            "status": "pending",
        }
        for i, c in enumerate(unique)
    ]
    for start in range(0, len(rows), _CHUNK):
        await session.execute(insert(CampaignContact), rows[start : start + _CHUNK])
    return campaign


async def lock_campaign_status(session: AsyncSession, *, campaign_id: str, exclusive: bool) -> None:
    """Take the campaign's status lock for this transaction (shared to send, exclusive to change).

    A transaction-scoped advisory lock rather than ``SELECT … FOR SHARE`` on the row: row share
    locks let new sharers in while an ``UPDATE`` waits, so a steady stream of sends could keep a
    pause waiting for as long as sends keep coming. The lock manager queues a new shared request
    behind a waiting exclusive one, so a pause waits only for the sends already in flight.
    """
    fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await session.execute(
        text(f"SELECT {fn}(hashtextextended('campaign-status:' || :id, 0))"), {"id": campaign_id}
    )


async def get_campaign(
    session: AsyncSession, *, campaign_id: str, lock: str | None = None
) -> Campaign | None:
    """One campaign; ``lock`` is None, "share" or "update"."""
    if lock == "share":
        # Read after the lock: in READ COMMITTED the next statement sees any status change
        # that held the exclusive lock before us.
        await lock_campaign_status(session, campaign_id=campaign_id, exclusive=False)
    stmt = select(Campaign).where(Campaign.id == campaign_id)
    if lock == "update":
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_contact(
    session: AsyncSession, *, campaign_id: str, email: str, lock: str | None = None
) -> CampaignContact | None:
    stmt = select(CampaignContact).where(
        CampaignContact.campaign_id == campaign_id, CampaignContact.email == normalize_email(email)
    )
    if lock == "share":
        stmt = stmt.with_for_update(read=True)
    elif lock == "update":
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_campaign_status(
    session: AsyncSession,
    *,
    campaign_id: str,
    from_statuses: Sequence[str],
    to: str,
    reason: str | None = None,
    finished: bool = False,
) -> tuple[str, int] | None:
    """Change the status (and bump the state version) if it is one of ``from_statuses``.

    Takes the campaign's status lock exclusively: it waits for every in-flight send (each
    holds it shared until its SMTP hand-over is recorded), new sends queue behind it, and every
    send that starts after this commits sees the new status. That is what makes a 202 to
    "pause" a promise.
    """
    await lock_campaign_status(session, campaign_id=campaign_id, exclusive=True)
    values: dict[str, Any] = {
        "status": to,
        "state_version": Campaign.state_version + 1,
        "status_reason": reason,
        "updated_at": func.now(),
    }
    if finished:
        values["finished_at"] = func.now()
    stmt = (
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_(list(from_statuses)))
        .values(**values)
        .returning(Campaign.status, Campaign.state_version)
    )
    row = (await session.execute(stmt)).one_or_none()
    return (row[0], row[1]) if row else None


async def upsert_mailbox(
    session: AsyncSession, *, email: str, daily_limit: int, timezone: str
) -> None:
    """The mailbox is shared by every campaign sending as it: the latest launch sets its limit."""
    stmt = insert(SenderMailbox).values(email=email, daily_limit=daily_limit, timezone=timezone)
    stmt = stmt.on_conflict_do_update(
        index_elements=[SenderMailbox.email],
        set_={"daily_limit": daily_limit, "timezone": timezone, "updated_at": func.now()},
    )
    await session.execute(stmt)


async def append_event(
    session: AsyncSession,
    *,
    campaign_id: str,
    contact_email: str,
    event: str,
    detail: str | None = None,
    step_index: int | None = None,
    at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> None:
    """Append to a contact's history (once per idempotency key)."""
    stmt = insert(ContactEvent).values(
        campaign_id=campaign_id,
        contact_email=contact_email,
        event=event,
        detail=detail,
        step_index=step_index,
        at=at or now_utc(),
        idempotency_key=idempotency_key,
    )
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[ContactEvent.idempotency_key])
    await session.execute(stmt)


async def counts(session: AsyncSession, *, campaign_id: str) -> dict[str, int]:
    """The numbers GET /v1/campaigns/{id} shows, from the tables (one query each)."""
    by_status: dict[str, int] = {}
    by_outcome: dict[str, int] = {}
    rows = await session.execute(
        select(CampaignContact.status, CampaignContact.outcome, func.count())
        .where(CampaignContact.campaign_id == campaign_id)
        .group_by(CampaignContact.status, CampaignContact.outcome)
    )
    for status, outcome, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        if outcome:
            by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    sent = await session.scalar(
        select(func.count())
        .select_from(CampaignSend)
        .where(CampaignSend.campaign_id == campaign_id, CampaignSend.status.in_(SENT_STATUSES))
    )
    bounced = await session.scalar(
        select(func.count(func.distinct(CampaignSend.contact_email))).where(
            CampaignSend.campaign_id == campaign_id, CampaignSend.bounce_type.is_not(None)
        )
    )
    replied = await session.scalar(
        select(func.count(func.distinct(InboundMessage.contact_email))).where(
            InboundMessage.campaign_id == campaign_id, InboundMessage.kind.in_(HUMAN_KINDS)
        )
    )
    attention = await session.scalar(
        select(func.count())
        .select_from(CampaignContact)
        .where(CampaignContact.campaign_id == campaign_id, CampaignContact.attention.is_not(None))
    )
    total = sum(by_status.values())
    not_enrolled = by_status.get("pending", 0) + by_status.get("excluded", 0)
    return {
        "contacts": total,
        "excluded": by_status.get("excluded", 0),
        "enrolled": total - not_enrolled,
        "active": sum(by_status.get(s, 0) for s in OPEN_CONTACT_STATUSES),
        "completed": by_status.get("completed", 0),
        "stopped": by_status.get("stopped", 0),
        "sent": sent or 0,
        "replied": replied or 0,
        "bounced": bounced or 0,
        "unsubscribed": by_outcome.get("unsubscribed", 0),
        "meetings": by_outcome.get("meeting_request", 0),
        "interested": by_outcome.get("interested", 0),
        "needs_attention": attention or 0,
    }


@dataclass
class VariantStats:
    sent: int = 0
    replied: int = 0
    positive: int = 0


async def step_stats(
    session: AsyncSession, *, campaign_id: str
) -> dict[tuple[int, str | None], VariantStats]:
    """Sent, replied and positive per (step, variant). A reply counts for the send it answers."""
    stats: dict[tuple[int, str | None], VariantStats] = {}
    rows = await session.execute(
        select(CampaignSend.step_index, CampaignSend.variant, func.count())
        .where(CampaignSend.campaign_id == campaign_id, CampaignSend.status.in_(SENT_STATUSES))
        .group_by(CampaignSend.step_index, CampaignSend.variant)
    )
    for step, variant, n in rows:
        stats.setdefault((step, variant), VariantStats()).sent = n
    replied = func.count(func.distinct(InboundMessage.contact_email))
    rows = await session.execute(
        select(
            InboundMessage.step_index,
            InboundMessage.variant,
            replied.filter(InboundMessage.kind.in_(HUMAN_KINDS)),
            replied.filter(InboundMessage.kind.in_(POSITIVE_KINDS)),
        )
        .where(InboundMessage.campaign_id == campaign_id, InboundMessage.step_index.is_not(None))
        .group_by(InboundMessage.step_index, InboundMessage.variant)
    )
    for step, variant, n_replied, n_positive in rows:
        s = stats.setdefault((step, variant), VariantStats())
        s.replied, s.positive = n_replied, n_positive
    return stats


async def excluded_contacts(
    session: AsyncSession, *, campaign_id: str, limit: int = 1000
) -> list[dict[str, str]]:
    rows = await session.execute(
        select(CampaignContact.email, CampaignContact.excluded_reason)
        .where(CampaignContact.campaign_id == campaign_id, CampaignContact.status == "excluded")
        .order_by(CampaignContact.position)
        .limit(limit)
    )
    return [{"email": e, "reason": r or ""} for e, r in rows]


# --- suppressions -----------------------------------------------------------------------------


async def add_suppression(
    session: AsyncSession,
    *,
    kind: str,
    value: str,
    reason: str,
    sender_email: str = "*",
    source: str | None = None,
) -> None:
    stmt = insert(Suppression).values(
        kind=kind,
        value=value.strip().lower(),
        sender_email=sender_email.lower(),
        reason=reason,
        source=source,
    )
    await session.execute(stmt.on_conflict_do_nothing())


def suppression_reason_of(email_col: Any, domain_col: Any, sender_email: str) -> Any:
    """A scalar subquery: why the row's address may not be mailed by this sender, or NULL.

    For a query that reads the contact anyway (the send), so the check costs no round trip.
    """
    return (
        select(
            case(
                (Suppression.kind == "domain", "do_not_contact_domain"),
                else_=Suppression.reason,
            )
        )
        .where(
            or_(
                and_(Suppression.kind == "email", Suppression.value == email_col),
                and_(Suppression.kind == "domain", Suppression.value == domain_col),
            ),
            Suppression.sender_email.in_(["*", sender_email.lower()]),
        )
        .limit(1)
        .correlate(CampaignContact)
        .scalar_subquery()
    )


async def suppression_for(session: AsyncSession, *, email: str, sender_email: str) -> str | None:
    """Why this address must not be mailed by this sender, or None."""
    email = normalize_email(email)
    stmt = (
        select(Suppression.reason, Suppression.kind)
        .where(
            or_(
                and_(Suppression.kind == "email", Suppression.value == email),
                and_(Suppression.kind == "domain", Suppression.value == email_domain(email)),
            ),
            Suppression.sender_email.in_(["*", sender_email.lower()]),
        )
        .limit(1)
    )
    row = (await session.execute(stmt)).first()
    if row is None:
        return None
    reason, kind = row
    return "do_not_contact_domain" if kind == "domain" else reason


async def suppressions_among(
    session: AsyncSession, *, emails: Sequence[str], sender_email: str
) -> dict[str, str]:
    """email -> suppression reason, for the emails of one preflight page."""
    domains = sorted({email_domain(e) for e in emails})
    rows = await session.execute(
        select(Suppression.kind, Suppression.value, Suppression.reason).where(
            Suppression.sender_email.in_(["*", sender_email.lower()]),
            or_(
                and_(Suppression.kind == "email", Suppression.value.in_(list(emails))),
                and_(Suppression.kind == "domain", Suppression.value.in_(domains)),
            ),
        )
    )
    by_email: dict[str, str] = {}
    by_domain: dict[str, str] = {}
    for kind, value, reason in rows:
        (by_email if kind == "email" else by_domain)[value] = reason
    found = {}
    for e in emails:
        if e in by_email:
            found[e] = by_email[e]
        elif email_domain(e) in by_domain:
            found[e] = "do_not_contact_domain"
    return found


# --- holds written by the webhooks ------------------------------------------------------------


async def hold_contact(
    session: AsyncSession,
    *,
    campaign_id: str,
    email: str,
    hold: str,
    reason: str,
    outcome: str | None = None,
    until: dt.datetime | None = None,
) -> bool:
    """Stop or pause a contact's sends, at once (the send reads this row FOR UPDATE).

    A stop is final and wins over a pause; a pause never overrides a stop. Returns whether the
    row changed.
    """
    email = normalize_email(email)
    where = [CampaignContact.campaign_id == campaign_id, CampaignContact.email == email]
    values: dict[str, Any] = {"hold": hold, "hold_reason": reason, "updated_at": func.now()}
    if hold == "stopped":
        where.append(or_(CampaignContact.hold.is_(None), CampaignContact.hold != "stopped"))
        values["hold_until"] = None
        if outcome:
            values["outcome"] = func.coalesce(CampaignContact.outcome, outcome)
        values["status"] = case(
            (CampaignContact.status.in_(list(OPEN_CONTACT_STATUSES)), "stopped"),
            else_=CampaignContact.status,
        )
    else:
        where.append(or_(CampaignContact.hold.is_(None), CampaignContact.hold == "paused"))
        values["hold_until"] = until
    result = await session.execute(update(CampaignContact).where(*where).values(**values))
    return bool(result.rowcount)


@dataclass
class ReplyMatch:
    campaign_id: str
    contact_email: str
    matched_by: str  # thread | sender
    replied_to: str | None  # our Message-ID it answers
    step_index: int | None
    variant: str | None
    sender_email: str
    company_key: str
    pause_company: bool


async def match_reply(
    session: AsyncSession, *, thread_ids: Sequence[str], from_email: str | None
) -> ReplyMatch | None:
    """The sequence a reply belongs to: by In-Reply-To/References first, then by its sender."""
    ids = [i.strip().strip("<>").strip() for i in thread_ids if i and i.strip().strip("<>")]
    send: CampaignSend | None = None
    if ids:
        found = {
            s.message_id: s
            for s in (
                await session.execute(select(CampaignSend).where(CampaignSend.message_id.in_(ids)))
            ).scalars()
        }
        send = next((found[i] for i in ids if i in found), None)
    matched_by = "thread"
    if send is None and from_email:
        matched_by = "sender"
        contact_row = (
            await session.execute(
                select(CampaignContact.campaign_id)
                .join(Campaign, Campaign.id == CampaignContact.campaign_id)
                .where(
                    CampaignContact.email == normalize_email(from_email),
                    CampaignContact.status.not_in(["pending", "excluded"]),
                )
                .order_by(Campaign.launched_at.desc().nulls_last())
                .limit(1)
            )
        ).first()
        if contact_row is None:
            return None
        send = (
            await session.execute(
                select(CampaignSend)
                .where(
                    CampaignSend.campaign_id == contact_row[0],
                    CampaignSend.contact_email == normalize_email(from_email),
                    CampaignSend.status.in_(SENT_STATUSES),
                )
                .order_by(CampaignSend.step_index.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if send is None:
            campaign_id, email = contact_row[0], normalize_email(from_email)
            return await _match_for(session, campaign_id, email, matched_by, None)
    if send is None:
        return None
    return await _match_for(session, send.campaign_id, send.contact_email, matched_by, send)


async def _match_for(
    session: AsyncSession,
    campaign_id: str,
    email: str,
    matched_by: str,
    send: CampaignSend | None,
) -> ReplyMatch | None:
    campaign = await session.get(Campaign, campaign_id)
    contact = await get_contact(session, campaign_id=campaign_id, email=email)
    if campaign is None or contact is None:
        return None
    return ReplyMatch(
        campaign_id=campaign_id,
        contact_email=email,
        matched_by=matched_by,
        replied_to=send.message_id if send else None,
        step_index=send.step_index if send else None,
        variant=send.variant if send else None,
        sender_email=campaign.sender_email,
        company_key=contact.company_key,
        pause_company=bool(campaign.options.get("pause_company_on_reply", True)),
    )


async def pause_colleagues(
    session: AsyncSession,
    *,
    campaign_id: str,
    company: str,
    except_email: str | None,
    until: dt.datetime,
    reason: str,
) -> list[str]:
    """Pause the other open contacts of a company in a campaign; their emails."""
    where = [
        CampaignContact.campaign_id == campaign_id,
        CampaignContact.company_key == company,
        CampaignContact.status.in_(list(OPEN_CONTACT_STATUSES) + ["pending"]),
        CampaignContact.hold.is_(None),
    ]
    if except_email:
        where.append(CampaignContact.email != normalize_email(except_email))
    result = await session.execute(
        update(CampaignContact)
        .where(*where)
        .values(hold="paused", hold_until=until, hold_reason=reason, updated_at=func.now())
        .returning(CampaignContact.email)
    )
    return [r[0] for r in result]


async def colleagues_by_domain(
    session: AsyncSession, *, domain: str
) -> list[tuple[str, str, bool]]:
    """(campaign_id, company_key, pause option) of running campaigns mailing this domain."""
    if domain in FREEMAIL_DOMAINS:
        return []
    rows = await session.execute(
        select(CampaignContact.campaign_id, CampaignContact.company_key, Campaign.options)
        .join(Campaign, Campaign.id == CampaignContact.campaign_id)
        .where(
            CampaignContact.domain == domain,
            Campaign.status.in_(["active", "paused"]),
        )
        .distinct()
    )
    return [(c, k, bool((o or {}).get("pause_company_on_reply", True))) for c, k, o in rows]


async def find_inbound(session: AsyncSession, *, message_id: str) -> InboundMessage | None:
    stmt = select(InboundMessage).where(InboundMessage.message_id == message_id)
    return (await session.execute(stmt)).scalar_one_or_none()


# --- delivery events --------------------------------------------------------------------------


@dataclass
class DeliveryOutcome:
    duplicate: bool = False
    send: CampaignSend | None = None
    stopped: bool = False
    suppressed: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def record_delivery_event(
    session: AsyncSession,
    *,
    type: str,
    message_id: str,
    event_key: str,
    bounce_type: str | None,
    detail: dict[str, Any],
) -> DeliveryOutcome:
    """Record one provider event (once per key) and apply it to the send and the contact."""
    message_id = message_id.strip().strip("<>").strip()
    send = await session.get(CampaignSend, message_id)
    stmt = (
        insert(DeliveryEvent)
        .values(
            event_key=event_key,
            type=type,
            message_id=message_id,
            campaign_id=send.campaign_id if send else None,
            contact_email=send.contact_email if send else None,
            detail=detail,
        )
        .on_conflict_do_nothing(index_elements=[DeliveryEvent.event_key])
        .returning(DeliveryEvent.id)
    )
    if (await session.execute(stmt)).first() is None:
        return DeliveryOutcome(duplicate=True, send=send)
    out = DeliveryOutcome(send=send)
    if send is None:
        return out
    if type == "open":
        send.opened_at = send.opened_at or now_utc()
        send.open_count += 1
    elif type == "click":
        send.clicked_at = send.clicked_at or now_utc()
        send.click_count += 1
    elif type in ("bounce", "complaint"):
        if type == "bounce":
            send.bounce_type = bounce_type or "hard"
            outcome, reason = "bounced", f"{send.bounce_type} bounce of step {send.step_index + 1}"
        else:
            send.complained_at = now_utc()
            outcome, reason = "complained", "the recipient marked our email as spam"
        out.stopped = await hold_contact(
            session,
            campaign_id=send.campaign_id,
            email=send.contact_email,
            hold="stopped",
            reason=reason,
            outcome=outcome,
        )
        if type == "complaint" or send.bounce_type == "hard":
            out.suppressed = "complaint" if type == "complaint" else "hard_bounce"
            await add_suppression(
                session,
                kind="email",
                value=send.contact_email,
                reason=out.suppressed,
                source=f"{type}:{message_id}",
            )
        await append_event(
            session,
            campaign_id=send.campaign_id,
            contact_email=send.contact_email,
            event=f"delivery.{type}",
            step_index=send.step_index,
            detail=reason,
        )
    await session.flush()
    return out


async def bounce_rate(session: AsyncSession, *, campaign_id: str) -> tuple[int, int]:
    """(sends, hard bounces) of a campaign."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(CampaignSend.bounce_type == "hard"),
            ).where(CampaignSend.campaign_id == campaign_id, CampaignSend.status.in_(SENT_STATUSES))
        )
    ).one()
    return row[0], row[1]


# --- unsubscribe ------------------------------------------------------------------------------


async def unsubscribe(
    session: AsyncSession, *, sender_email: str, contact_email: str, source: str
) -> list[str]:
    """Suppress the address for the sender and stop it in every campaign of that sender.

    Returns the campaign ids whose sequence for the address was stopped now.
    """
    email = normalize_email(contact_email)
    await add_suppression(
        session,
        kind="email",
        value=email,
        reason="unsubscribed",
        sender_email=sender_email,
        source=source,
    )
    campaign_ids = (
        await session.execute(
            select(CampaignContact.campaign_id)
            .join(Campaign, Campaign.id == CampaignContact.campaign_id)
            .where(Campaign.sender_email == sender_email.lower(), CampaignContact.email == email)
        )
    ).scalars()
    stopped = []
    for campaign_id in list(campaign_ids):
        if await hold_contact(
            session,
            campaign_id=campaign_id,
            email=email,
            hold="stopped",
            reason="unsubscribed",
            outcome="unsubscribed",
        ):
            await append_event(
                session,
                campaign_id=campaign_id,
                contact_email=email,
                event="unsubscribed",
                detail=f"one-click unsubscribe ({source})",
            )
            stopped.append(campaign_id)
    return stopped


# --- tasks ------------------------------------------------------------------------------------


async def open_contact_count(session: AsyncSession, *, campaign_id: str) -> int:
    """Enrolled contacts whose sequence has not closed yet."""
    return (
        await session.scalar(
            select(func.count())
            .select_from(CampaignContact)
            .where(
                CampaignContact.campaign_id == campaign_id,
                CampaignContact.status.not_in(["pending", "excluded"]),
                CampaignContact.closed_at.is_(None),
            )
        )
        or 0
    )


async def lock_timeout(session: AsyncSession, *, milliseconds: int) -> None:
    """Bound how long this transaction waits for a row lock."""
    await session.execute(text(f"SET LOCAL lock_timeout = '{int(milliseconds)}ms'"))


async def set_attention(
    session: AsyncSession,
    *,
    campaign_id: str,
    contact_email: str | None,
    attention: dict[str, Any] | None,
) -> bool:
    """Record (or, with None, clear) where a parked campaign or one contact's sequence waits.

    Only an overlay: the campaign's ``status`` stays the send gate and the contact's ``status``
    its place in the sequence. False when the campaign or contact does not exist.
    """
    if contact_email is None:
        stmt = update(Campaign).where(Campaign.id == campaign_id)
    else:
        stmt = update(CampaignContact).where(
            CampaignContact.campaign_id == campaign_id,
            CampaignContact.email == normalize_email(contact_email),
        )
    result = await session.execute(stmt.values(attention=attention))
    return bool(result.rowcount)


async def parked_contacts(session: AsyncSession, *, campaign_id: str) -> list[str]:
    """The contacts whose sequence is recorded as parked in needs_attention."""
    rows = await session.scalars(
        select(CampaignContact.email)
        .where(CampaignContact.campaign_id == campaign_id, CampaignContact.attention.is_not(None))
        .order_by(CampaignContact.position)
    )
    return list(rows)
