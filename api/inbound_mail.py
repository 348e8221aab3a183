"""An inbound reply, after the webhook parsed it: the transaction that records it, then the
signals that let the workflows catch up.

What must hold the moment the webhook answers is written here, in one transaction: the inbound
row, the contact's hold (stop, or pause until a date), the suppression, the bounce on the send,
the company's pause. The send checks those in the transaction that sends, so a reply that
arrived just before a due send stops it. Only once that has committed are the sequences (and,
for a bounce, the campaign) signalled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.campaigns import signal_or_log, tell_bounce, tell_unsubscribed
from db import campaigns as campaigns_db
from db.campaign_models import CampaignSend, InboundMessage
from dealflow.ids import sequence_workflow_id
from dealflow.settings import Settings
from domain.campaign_email import UnsubscribeRequest, read_unsubscribe_token
from domain.campaign_rules import auto_reply_resume_at, reply_route
from domain.replies import Classification
from messages.campaign import ContactHold, ReplyEvent
from workflows.sequence import SequenceWorkflow

_TOKEN_IN_SUBJECT = re.compile(r"unsubscribe\s+([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)", re.I)


class InboundMail(Protocol):
    """The parsed message, already bounded and storable (``api/routes/mail_webhooks.py``)."""

    classification: Classification
    from_email: str | None
    subject: str
    message_id: str | None
    thread: list[str]
    text: str


@dataclass
class InboundRecorded:
    """What the transaction wrote, for the answer and the signals that follow it."""

    inbound_id: str
    from_email: str | None
    received_at: datetime
    classification: Classification
    match: campaigns_db.ReplyMatch | None
    unsub: UnsubscribeRequest | None
    response: dict[str, Any]
    resume_at: datetime | None = None
    stopped_elsewhere: list[str] = field(default_factory=list)
    # (campaign id, contact email, paused until) of the colleagues paused with the company.
    colleagues: list[tuple[str, str, datetime]] = field(default_factory=list)


def _unsubscribe_in_subject(settings: Settings, subject: str) -> UnsubscribeRequest | None:
    """The List-Unsubscribe mailto carries the token in its subject: that is an unsubscribe,
    whatever the text says, and it names the address and sender exactly."""
    token = _TOKEN_IN_SUBJECT.search(subject or "")
    if token is None:
        return None
    return read_unsubscribe_token(settings.secret("link_signing_key"), token.group(1))


async def record_inbound(
    session: AsyncSession, settings: Settings, msg: InboundMail, *, now: datetime
) -> InboundRecorded:
    """Match the message to its sequence, record it and its consequences; commits."""
    classification = msg.classification
    unsub = _unsubscribe_in_subject(settings, msg.subject)
    if unsub is not None:
        classification = Classification("unsubscribe", "list_unsubscribe_mailto_token")

    match = None
    if unsub is not None:
        match = await campaigns_db.match_reply(
            session, thread_ids=[], from_email=unsub.contact_email
        )
    if match is None:
        match = await campaigns_db.match_reply(
            session, thread_ids=msg.thread, from_email=msg.from_email
        )
    inbound = InboundMessage(
        id=campaigns_db.new_inbound_id(),
        message_id=msg.message_id,
        from_email=msg.from_email,
        subject=msg.subject,
        text=msg.text,
        kind=classification.kind,
        rule=classification.rule,
        classification=classification.as_json(),
        campaign_id=match.campaign_id if match else None,
        contact_email=match.contact_email if match else None,
        matched_by=("token" if unsub else match.matched_by) if match else None,
        replied_to=match.replied_to if match else None,
        step_index=match.step_index if match else None,
        variant=match.variant if match else None,
    )
    session.add(inbound)
    recorded = InboundRecorded(
        inbound_id=inbound.id,
        from_email=msg.from_email,
        received_at=now,
        classification=classification,
        match=match,
        unsub=unsub,
        response={},
    )
    action = "recorded"
    if unsub is not None:
        recorded.stopped_elsewhere = await campaigns_db.unsubscribe(
            session,
            sender_email=unsub.sender_email,
            contact_email=unsub.contact_email,
            source=f"mailto:{inbound.id}",
        )
        action = "stopped and suppressed (unsubscribed)"
    elif match is not None:
        action = await _hold_the_contact(session, settings, recorded, match)
    elif classification.kind in campaigns_db.HUMAN_KINDS and msg.from_email:
        await _pause_company_by_domain(session, settings, recorded, msg.from_email)
    recorded.response = {
        "classification": classification.as_json(),
        "matched": (
            {"campaign_id": match.campaign_id, "contact_email": match.contact_email}
            if match
            else None
        ),
        "inbound_id": inbound.id,
        "action": action,
        "paused_colleagues": [
            {"campaign_id": c, "contact_email": e, "until": u.isoformat()}
            for c, e, u in recorded.colleagues
        ],
    }
    inbound.action = action
    inbound.response = recorded.response
    await session.commit()
    return recorded


async def _hold_the_contact(
    session: AsyncSession,
    settings: Settings,
    recorded: InboundRecorded,
    match: campaigns_db.ReplyMatch,
) -> str:
    """A reply from a contact of ours: pause or stop them as the route says; the action text."""
    classification, now = recorded.classification, recorded.received_at
    route = reply_route(classification.kind, classification.bounce_type)
    contact = await campaigns_db.get_contact(
        session, campaign_id=match.campaign_id, email=match.contact_email
    )
    assert contact is not None
    kind = classification.kind.replace("_", " ")
    if route.action == "pause":
        resume_at = auto_reply_resume_at(
            classification.return_date,
            now,
            contact.timezone,
            contact.country,
            default_days=settings.campaign_auto_reply_default_pause_days,
            max_days=settings.campaign_auto_reply_max_pause_days,
        )
        recorded.resume_at = resume_at
        await campaigns_db.hold_contact(
            session,
            campaign_id=match.campaign_id,
            email=match.contact_email,
            hold="paused",
            until=resume_at,
            reason=f"auto-reply ({classification.rule}); resumes {resume_at.isoformat()}",
        )
        action = f"paused until {resume_at.isoformat()}"
    else:
        await campaigns_db.hold_contact(
            session,
            campaign_id=match.campaign_id,
            email=match.contact_email,
            hold="stopped",
            reason=f"replied: {kind} (rule {classification.rule})",
            outcome=route.outcome,
        )
        action = "stopped"
    if route.suppress:
        await campaigns_db.add_suppression(
            session,
            kind="email",
            value=match.contact_email,
            reason=route.suppress,
            sender_email="*" if route.suppress_all_senders else match.sender_email,
            source=f"reply:{recorded.inbound_id}",
        )
        action += f" and suppressed ({route.suppress})"
    if classification.kind == "bounce" and match.replied_to:
        send = await session.get(CampaignSend, match.replied_to)
        if send is not None and send.bounce_type is None:
            send.bounce_type = classification.bounce_type or "hard"
    await campaigns_db.append_event(
        session,
        campaign_id=match.campaign_id,
        contact_email=match.contact_email,
        event="reply.received",
        step_index=match.step_index,
        detail=f"{classification.kind} (rule {classification.rule}) from {recorded.from_email}: "
        f"{action}",
    )
    if classification.kind in campaigns_db.HUMAN_KINDS and match.pause_company:
        until = now + timedelta(days=settings.campaign_company_pause_days)
        for email in await campaigns_db.pause_colleagues(
            session,
            campaign_id=match.campaign_id,
            company=match.company_key,
            except_email=match.contact_email,
            until=until,
            reason=f"{recorded.from_email} at the same company replied",
        ):
            recorded.colleagues.append((match.campaign_id, email, until))
    return action


async def _pause_company_by_domain(
    session: AsyncSession, settings: Settings, recorded: InboundRecorded, from_email: str
) -> None:
    """Someone we never mailed, at a company we are mailing: pause that company."""
    until = recorded.received_at + timedelta(days=settings.campaign_company_pause_days)
    domain = campaigns_db.email_domain(from_email)
    for campaign_id, company, pause in await campaigns_db.colleagues_by_domain(
        session, domain=domain
    ):
        if not pause:
            continue
        for email in await campaigns_db.pause_colleagues(
            session,
            campaign_id=campaign_id,
            company=company,
            except_email=None,
            until=until,
            reason=f"{from_email} at the same company replied",
        ):
            recorded.colleagues.append((campaign_id, email, until))


async def tell_workflows(temporal: Client, recorded: InboundRecorded) -> None:
    """After the commit (every later send sees the hold): let the workflows catch up."""
    match, unsub, classification = recorded.match, recorded.unsub, recorded.classification
    if match is not None and unsub is None:
        await signal_or_log(
            temporal,
            sequence_workflow_id(match.campaign_id, match.contact_email),
            SequenceWorkflow.reply,
            ReplyEvent(
                inbound_id=recorded.inbound_id,
                kind=classification.kind,
                rule=classification.rule,
                from_email=recorded.from_email,
                received_at=recorded.received_at,
                bounce_type=classification.bounce_type,
                return_date=classification.return_date,
                resume_at=recorded.resume_at,
            ),
        )
        if classification.kind == "bounce" and match.replied_to:
            await tell_bounce(temporal, match.campaign_id, match.replied_to)
    if unsub is not None:
        await tell_unsubscribed(
            temporal, recorded.stopped_elsewhere, unsub.contact_email, how="mailto"
        )
    for campaign_id, email, until in recorded.colleagues:
        await signal_or_log(
            temporal,
            sequence_workflow_id(campaign_id, email),
            SequenceWorkflow.contact_hold,
            ContactHold(
                kind="pause",
                reason=f"{recorded.from_email} at the same company replied",
                until=until,
            ),
        )
