"""Mail webhooks (inbound replies, delivery events) and one-click unsubscribe.

Both webhooks are signed by the mail provider: ``X-Dealflow-Signature: t=<unix>,v1=<hex>`` with
the HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with the mail webhook secret; a signature older
than five minutes (or from the future by as much) or that does not match is 401.

What must hold the moment a webhook answers is written to PostgreSQL in its transaction: the
contact's hold (stop, or pause until a date), the suppression, the reply itself. The send checks
those in the transaction that sends, so a reply that arrived just before a due send stops it.
Then the sequence is signalled, which makes its own state, status query and side effects (the
rep's Slack message and task) catch up.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import Parser
from email.utils import getaddresses, parseaddr
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from activities.email import read_unsubscribe_token
from api.campaign_schemas import DeliveryEventCreate, InboundParts, InboundRaw
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError
from db import campaigns as campaigns_db
from db.campaign_models import CampaignSend, InboundMessage
from dealflow.ids import campaign_workflow_id, sequence_workflow_id
from dealflow.settings import Settings
from domain.replies import Classification, classify_message, classify_parts, strip_quoted
from workflows.campaign import BounceRecorded, CampaignWorkflow
from workflows.sequence import (
    ContactHold,
    DeliveryEvent,
    ReplyEvent,
    SequenceWorkflow,
    auto_reply_resume_at,
    reply_route,
)

log = logging.getLogger("dealflow.api")

router = APIRouter(tags=["mail webhooks"])

SIGNATURE_HEADER = "x-dealflow-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
_TOKEN_IN_SUBJECT = re.compile(r"unsubscribe\s+([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)", re.I)


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value a provider sends (also used by tests and the benchmark)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


async def verified_body(request: Request, settings: Settings) -> bytes:
    """The raw body, once its signature is checked (401 with the error body otherwise)."""
    body = await request.body()
    header = request.headers.get(SIGNATURE_HEADER, "")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError, IndexError):
        raise ApiError(
            401, "invalid_signature", f"Send the {SIGNATURE_HEADER} header: t=<unix>,v1=<hmac>."
        ) from None
    if abs(time.time() - t) > SIGNATURE_TOLERANCE_SECONDS:
        raise ApiError(401, "invalid_signature", "The signature is too old (or from the future).")
    secret = settings.secret("mail_webhook_secret").encode()
    expected = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, v) for v in parts.get("v1", [])):
        raise ApiError(401, "invalid_signature", "The signature does not match the body.")
    return body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None


def _validation_error(err: ValidationError) -> ApiError:
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "message": e.get("msg")}
        for e in err.errors()
    ]
    return ApiError(422, "invalid_request", "The request is not valid; see details.", details)


def _ids(value: str | None) -> list[str]:
    return re.findall(r"<([^<>\s]+)>", value or "") or ([value.strip()] if value else [])


class _Inbound:
    """The webhook's two forms, read into the same shape."""

    def __init__(self, data: Any, today: datetime) -> None:
        if isinstance(data, dict) and "raw" in data:
            try:
                raw = InboundRaw.model_validate(data)
            except ValidationError as err:
                raise _validation_error(err) from None
            msg = Parser(policy=policy.default).parsestr(raw.raw)
            self.classification = classify_message(msg, received_on=today.date())
            self.from_email = parseaddr(str(msg.get("From", "")))[1] or None
            self.subject = str(msg.get("Subject", "") or "")
            self.message_id = (_ids(str(msg.get("Message-ID", ""))) or [None])[0]
            self.thread = _ids(str(msg.get("In-Reply-To", ""))) + _ids(
                str(msg.get("References", ""))
            )
            self.text = strip_quoted(_plain_text(msg))
        else:
            try:
                parts = InboundParts.model_validate(data)
            except ValidationError as err:
                raise _validation_error(err) from None
            headers = {
                k: (v if isinstance(v, str) else " ".join(v)) for k, v in parts.headers.items()
            }
            lower = {k.lower(): v for k, v in headers.items()}
            if "from" not in lower:
                headers["From"] = parts.from_
            self.classification = classify_parts(
                subject=parts.subject, text=parts.text, headers=headers, received_on=today.date()
            )
            addresses = getaddresses([parts.from_])
            self.from_email = addresses[0][1] if addresses and addresses[0][1] else None
            self.subject = parts.subject
            self.message_id = (_ids(lower.get("message-id")) or [None])[0]
            self.thread = _ids(parts.in_reply_to or lower.get("in-reply-to")) + _ids(
                lower.get("references")
            )
            self.text = strip_quoted(parts.text)
        if self.from_email:
            self.from_email = self.from_email.strip().lower()


def _plain_text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, UnicodeError):
        return ""
    return content if isinstance(content, str) else ""


async def _signal(client: Client, workflow_id: str, signal: Any, arg: Any) -> bool:
    """Signal a workflow; a closed or unknown one is logged (the database holds the truth)."""
    try:
        await client.get_workflow_handle(workflow_id).signal(signal, arg)
        return True
    except RPCError as err:
        log.info("could not signal %s: %s", workflow_id, err)
        return False


@router.post("/v1/webhooks/email/inbound")
async def inbound_email(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> JSONResponse:
    """An inbound message: classified, matched to its sequence, recorded, routed."""
    body = await verified_body(request, settings)
    now = datetime.now(UTC)
    msg = _Inbound(_json(body), now)
    if msg.message_id:
        existing = await campaigns_db.find_inbound(session, message_id=msg.message_id)
        if existing is not None and existing.response is not None:
            return JSONResponse(existing.response, headers={"Idempotent-Replayed": "true"})
    classification = msg.classification
    # The List-Unsubscribe mailto carries the token in its subject: that is an unsubscribe,
    # whatever the text says, and it names the address and sender exactly.
    token = _TOKEN_IN_SUBJECT.search(msg.subject or "")
    unsub = (
        read_unsubscribe_token(settings.secret("link_signing_key"), token.group(1))
        if token
        else None
    )
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
    route = reply_route(classification.kind, classification.bounce_type)
    inbound = InboundMessage(
        id=campaigns_db.new_inbound_id(),
        message_id=msg.message_id,
        from_email=msg.from_email,
        subject=msg.subject,
        text=(msg.text or "")[:20_000],
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
    action = "recorded"
    resume_at = None
    stopped_elsewhere: list[str] = []
    colleagues: list[tuple[str, str, datetime]] = []
    if unsub is not None:
        stopped_elsewhere = await campaigns_db.unsubscribe(
            session,
            sender_email=unsub.sender_email,
            contact_email=unsub.contact_email,
            source=f"mailto:{inbound.id}",
        )
        action = "stopped and suppressed (unsubscribed)"
    elif match is not None:
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
                source=f"reply:{inbound.id}",
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
            detail=f"{classification.kind} (rule {classification.rule}) from {msg.from_email}: "
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
                reason=f"{msg.from_email} at the same company replied",
            ):
                colleagues.append((match.campaign_id, email, until))
    elif classification.kind in campaigns_db.HUMAN_KINDS and msg.from_email:
        # Someone we never mailed, at a company we are mailing: pause that company.
        until = now + timedelta(days=settings.campaign_company_pause_days)
        domain = campaigns_db.email_domain(msg.from_email)
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
                reason=f"{msg.from_email} at the same company replied",
            ):
                colleagues.append((campaign_id, email, until))
    response: dict[str, Any] = {
        "classification": classification.as_json(),
        "matched": (
            {"campaign_id": match.campaign_id, "contact_email": match.contact_email}
            if match
            else None
        ),
        "inbound_id": inbound.id,
        "action": action,
        "paused_colleagues": [
            {"campaign_id": c, "contact_email": e, "until": u.isoformat()} for c, e, u in colleagues
        ],
    }
    inbound.action = action
    inbound.response = response
    await session.commit()

    # Committed: every later send sees the hold. Now let the workflows catch up.
    if match is not None and unsub is None:
        await _signal(
            temporal,
            sequence_workflow_id(match.campaign_id, match.contact_email),
            SequenceWorkflow.reply,
            ReplyEvent(
                inbound_id=inbound.id,
                kind=classification.kind,
                rule=classification.rule,
                from_email=msg.from_email,
                received_at=now,
                bounce_type=classification.bounce_type,
                return_date=classification.return_date,
                resume_at=resume_at,
            ),
        )
        if classification.kind == "bounce" and match.replied_to:
            await _signal(
                temporal,
                campaign_workflow_id(match.campaign_id),
                CampaignWorkflow.bounce_recorded,
                BounceRecorded(message_id=match.replied_to),
            )
    if unsub is not None:
        for campaign_id in stopped_elsewhere:
            await _signal(
                temporal,
                sequence_workflow_id(campaign_id, unsub.contact_email),
                SequenceWorkflow.contact_hold,
                ContactHold(kind="stop", reason="unsubscribed (mailto)", outcome="unsubscribed"),
            )
    for campaign_id, email, until in colleagues:
        await _signal(
            temporal,
            sequence_workflow_id(campaign_id, email),
            SequenceWorkflow.contact_hold,
            ContactHold(
                kind="pause", reason=f"{msg.from_email} at the same company replied", until=until
            ),
        )
    return JSONResponse(response)


@router.post("/v1/webhooks/email/events")
async def delivery_events(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> dict[str, Any]:
    """Delivery events: bounces and complaints stop and suppress; opens and clicks count."""
    body = await verified_body(request, settings)
    try:
        event = DeliveryEventCreate.model_validate(_json(body))
    except ValidationError as err:
        raise _validation_error(err) from None
    key = event.id or hashlib.sha256(body).hexdigest()
    outcome = await campaigns_db.record_delivery_event(
        session,
        type=event.type,
        message_id=event.message_id,
        event_key=f"{event.type}:{key}",
        bounce_type=event.bounce_type,
        detail=event.model_dump(mode="json", exclude={"type", "message_id"}),
    )
    send = outcome.send
    await session.commit()
    matched = (
        {
            "campaign_id": send.campaign_id,
            "contact_email": send.contact_email,
            "step": send.step_index,
        }
        if send
        else None
    )
    if outcome.duplicate or send is None:
        return {"recorded": not outcome.duplicate, "matched": matched, "action": "none"}
    action = "recorded"
    if event.type in ("bounce", "complaint"):
        action = "stopped" + (
            f" and suppressed ({outcome.suppressed})" if outcome.suppressed else ""
        )
        reason = (
            f"{send.bounce_type} bounce of step {send.step_index + 1}"
            if event.type == "bounce"
            else "the recipient marked our email as spam"
        )
        await _signal(
            temporal,
            sequence_workflow_id(send.campaign_id, send.contact_email),
            SequenceWorkflow.delivery_event,
            DeliveryEvent(
                type=event.type,
                message_id=send.message_id,
                bounce_type=send.bounce_type,
                reason=reason,
            ),
        )
        if send.bounce_type == "hard":
            await _signal(
                temporal,
                campaign_workflow_id(send.campaign_id),
                CampaignWorkflow.bounce_recorded,
                BounceRecorded(message_id=send.message_id),
            )
    return {"recorded": True, "matched": matched, "action": action}


_UNSUBSCRIBED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body style="font-family: Arial, sans-serif; max-width: 36em; margin: 4em auto;">
<h1>You are unsubscribed</h1>
<p>{email} will get no more emails from {sender}.</p>
</body></html>
"""


@router.api_route("/v1/unsubscribe/{token}", methods=["GET", "POST"], tags=["mail webhooks"])
async def unsubscribe(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> Any:
    """One-click unsubscribe (RFC 8058), no login: effective at once for the whole sender.

    The mail client's one-click POST and the footer link's GET both unsubscribe; the token is
    signed and names one address and one sender, so it can do nothing else.
    """
    req = read_unsubscribe_token(settings.secret("link_signing_key"), token)
    if req is None:
        raise ApiError(404, "not_found", "This unsubscribe link is not valid.")
    stopped = await campaigns_db.unsubscribe(
        session,
        sender_email=req.sender_email,
        contact_email=req.contact_email,
        source=f"link:{request.method}:{req.campaign_id}",
    )
    await session.commit()
    for campaign_id in stopped:
        await _signal(
            temporal,
            sequence_workflow_id(campaign_id, req.contact_email),
            SequenceWorkflow.contact_hold,
            ContactHold(kind="stop", reason="unsubscribed (one click)", outcome="unsubscribed"),
        )
    if request.method == "POST":
        return {"unsubscribed": True, "email": req.contact_email, "sender": req.sender_email}
    return HTMLResponse(
        _UNSUBSCRIBED_PAGE.format(
            email=html.escape(req.contact_email), sender=html.escape(req.sender_email)
        )
    )
