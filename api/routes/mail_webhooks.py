"""Mail webhooks (inbound replies, delivery events) and one-click unsubscribe.

Both webhooks are signed by the mail provider: ``X-Dealflow-Signature: t=<unix>,v1=<hex>`` with
the HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with the mail webhook secret; a signature older
than five minutes (or from the future by as much) or that does not match is 401.

What must hold the moment a webhook answers is written to PostgreSQL in its transaction: the
contact's hold (stop, or pause until a date), the suppression, the reply itself (for an inbound
message that transaction is ``api/inbound_mail.py``). The send checks those in the transaction
that sends, so a reply that arrived just before a due send stops it. Then the sequence is
signalled, which makes its own state, status query and side effects (the rep's Slack message and
task) catch up.

Anyone can send us mail, so nothing here runs unbounded work on the event loop: the body is read
up to its limit, and the signature check, the JSON decoding, the MIME parse and the classifier
run in a worker thread (``_off_loop``) on input ``domain.replies`` bounds. Whatever is stored is
first made storable (no NUL, no lone surrogates, nothing decoded from a non-text part).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError

from api import inbound_mail
from api.campaign_schemas import DeliveryEventCreate, InboundParts, InboundRaw
from api.campaigns import signal_or_log, tell_bounce, tell_unsubscribed
from api.deps import SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError
from api.pages import page_env
from db import campaigns as campaigns_db
from dealflow.ids import sequence_workflow_id
from dealflow.limits import (
    MAX_DECODED_TEXT,
    MAX_INBOUND_MAIL_BODY,
    MAX_JSON_BODY,
    MAX_MAIL_HEADER_VALUE,
    MAX_STORED_REPLY_TEXT,
)
from dealflow.settings import Settings
from domain.campaign_email import read_unsubscribe_token
from domain.replies import (
    classify_message,
    classify_parts,
    parse_raw,
    readable_text,
    storable,
    strip_quoted,
)
from messages.campaign import DeliveryEvent
from workflows.sequence import SequenceWorkflow

log = logging.getLogger("dealflow.api")

router = APIRouter(tags=["mail webhooks"])

SIGNATURE_HEADER = "x-dealflow-signature"
SIGNATURE_TOLERANCE_SECONDS = 300
_HEX_MAC = re.compile(r"[0-9a-fA-F]{64}")
# Longer than any real header carrying a timestamp and a few signatures (key rotation).
_MAX_SIGNATURE_HEADER = 1000
# Unix seconds have 10 digits until the year 2286; more is not a timestamp (and int() of
# thousands of digits, or a float of it, raises rather than compares).
_MAX_TIMESTAMP_DIGITS = 12
# The Message-ID column; References may name hundreds of messages, the newest are enough.
_MAX_ID = 255
_MAX_THREAD_IDS = 100
_MAX_EVENT_KEY = 200  # campaign_delivery_events.event_key

# The parse and the classification run in threads, not processes: their cost is bounded (linear
# in a bounded prefix, see domain/replies.py), the email package's parser is pure Python that
# hands the GIL back every few milliseconds, and each regex call reads at most 64 KiB, so the
# event loop keeps answering; a process pool would copy each message (up to 32 MiB) both ways
# and keep spare interpreters alive for a rare request. A pool of its own, two threads (the
# cores we plan for): a burst of huge messages queues here instead of taking every thread of the
# default executor that the rest of the API uses.
_MAIL_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dealflow-mail")

# Test hook (integration tests set it, nothing else does): called in the worker thread before an
# inbound message is parsed, so a test can hold the classification while it checks that other
# requests are answered, then release it.
before_classify: Callable[[], None] | None = None

_T = TypeVar("_T")


async def _off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(
        _MAIL_POOL, functools.partial(fn, *args)
    )


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value a provider sends (also used by tests and the benchmark)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _unsigned(message: str) -> ApiError:
    return ApiError(401, "invalid_signature", message)


def _signature(header: str) -> tuple[int, list[str]]:
    """(t, v1 values) of a well-formed header; 401 for anything else, never an exception."""
    usage = f"Send the {SIGNATURE_HEADER} header: t=<unix seconds>,v1=<hex hmac>."
    if not header or len(header) > _MAX_SIGNATURE_HEADER or not header.isascii():
        raise _unsigned(usage)
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key.strip(), []).append(value.strip())
    raw_t = (parts.get("t") or [""])[0]
    if not raw_t.isdigit() or len(raw_t) > _MAX_TIMESTAMP_DIGITS:
        raise _unsigned(usage)
    macs = [v.lower() for v in parts.get("v1", []) if _HEX_MAC.fullmatch(v)]
    if not macs:
        raise _unsigned(usage)
    return int(raw_t), macs


def _verify(secret: str, header: str, body: bytes) -> None:
    t, macs = _signature(header)
    if abs(time.time() - t) > SIGNATURE_TOLERANCE_SECONDS:
        raise _unsigned("The signature is too old (or from the future).")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, v) for v in macs):
        raise _unsigned("The signature does not match the body.")


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, read up to ``limit`` bytes (413 past it; the edge's middleware refuses most
    such requests from Content-Length before this runs)."""
    too_large = ApiError(413, "payload_too_large", f"The request body is over {limit} bytes.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def verified_body(request: Request, settings: Settings, limit: int = MAX_JSON_BODY) -> bytes:
    """The raw body, once its signature is checked (401 with the error body otherwise).

    The MAC over up to 32 MiB is computed in the mail pool, not on the event loop.
    """
    body = await _bounded_body(request, limit)
    header = request.headers.get(SIGNATURE_HEADER, "")
    await _off_loop(_verify, settings.secret("mail_webhook_secret"), header, body)
    return body


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None


def _fits(value: str, length: int) -> str:
    """``value`` if it fits a column of ``length``, else a stable digest of it (still unique,
    so a provider's retry is still recognised; such an id matches none of our sends anyway)."""
    if len(value) <= length:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _storable_json(value: Any) -> Any:
    """A JSON value PostgreSQL's JSONB accepts: no NUL, no lone surrogates, in keys or strings."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value


def _validation_error(err: ValidationError) -> ApiError:
    details = [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "message": e.get("msg")}
        for e in err.errors()
    ]
    return ApiError(422, "invalid_request", "The request is not valid; see details.", details)


def _ids(value: str | None) -> list[str]:
    """Message-IDs (without <>) that fit the column, storable; the last ``_MAX_THREAD_IDS``."""
    value = storable(value or "")
    found = re.findall(r"<([^<>\s]+)>", value) or ([value.strip()] if value.strip() else [])
    return [i for i in found if len(i) <= _MAX_ID][-_MAX_THREAD_IDS:]


def _address(value: str | None) -> str | None:
    """A lower-cased address that fits the column (320), or None."""
    value = storable(value or "").strip().lower()
    return value if value and len(value) <= 320 else None


class _Inbound:
    """The webhook's two forms, read into the same shape."""

    def __init__(self, body: bytes, today: datetime) -> None:
        # Runs in the mail pool (see inbound_email): everything here is bounded work.
        hook = before_classify
        if hook is not None:
            hook()
        # Real mail carries NUL and undecodable bytes (as lone surrogates in the provider's
        # JSON): removed here, so the message is recorded rather than refused or half-written.
        data = _storable_json(_json(body))
        if isinstance(data, dict) and "raw" in data:
            try:
                raw = InboundRaw.model_validate(data)
            except ValidationError as err:
                raise _validation_error(err) from None
            msg = parse_raw(raw.raw)
            self.classification = classify_message(msg, received_on=today.date())
            self.from_email = parseaddr(_get(msg, "From"))[1] or None
            self.subject = _get(msg, "Subject")
            self.message_id = (_ids(_get(msg, "Message-ID")) or [None])[0]
            self.thread = _ids(_get(msg, "In-Reply-To")) + _ids(_get(msg, "References"))
            self.text = strip_quoted(readable_text(msg))
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
            self.text = strip_quoted(storable(parts.text[:MAX_DECODED_TEXT]))
        self.from_email = _address(self.from_email)
        self.subject = storable(self.subject or "")[:MAX_MAIL_HEADER_VALUE]
        self.text = storable(self.text or "")[:MAX_STORED_REPLY_TEXT]


def _get(msg: EmailMessage, name: str) -> str:
    """A header as text (the parser's policy bounds it); a malformed one is ""."""
    try:
        return str(msg.get(name, "") or "")
    except Exception:  # noqa: BLE001 - the email package raises assorted errors on junk headers
        return ""


@router.post("/v1/webhooks/email/inbound")
async def inbound_email(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> JSONResponse:
    """An inbound message: classified, matched to its sequence, recorded, routed."""
    body = await verified_body(request, settings, MAX_INBOUND_MAIL_BODY)
    now = datetime.now(UTC)
    msg = await _off_loop(_Inbound, body, now)
    if msg.message_id:
        existing = await campaigns_db.find_inbound(session, message_id=msg.message_id)
        if existing is not None and existing.response is not None:
            return JSONResponse(existing.response, headers={"Idempotent-Replayed": "true"})
    recorded = await inbound_mail.record_inbound(session, settings, msg, now=now)
    await inbound_mail.tell_workflows(temporal, recorded)
    return JSONResponse(recorded.response)


@router.post("/v1/webhooks/email/events")
async def delivery_events(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> dict[str, Any]:
    """Delivery events: bounces and complaints stop and suppress; opens and clicks count."""
    body = await verified_body(request, settings)
    try:
        event = DeliveryEventCreate.model_validate(_storable_json(_json(body)))
    except ValidationError as err:
        raise _validation_error(err) from None
    key = event.id or hashlib.sha256(body).hexdigest()
    outcome = await campaigns_db.record_delivery_event(
        session,
        type=event.type,
        message_id=_fits(event.message_id.strip().strip("<>").strip(), _MAX_ID),
        event_key=_fits(f"{event.type}:{key}", _MAX_EVENT_KEY),
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
        await signal_or_log(
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
            await tell_bounce(temporal, send.campaign_id, send.message_id)
    return {"recorded": True, "matched": matched, "action": action}


# A token is a few hundred characters at most; a longer one is refused before any HMAC.
_MAX_UNSUBSCRIBE_TOKEN = 1000


def _unsubscribe_page(settings: Settings, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("done", False)
    context.setdefault("problem", None)
    page = page_env(settings).get_template("unsubscribe/page.html.j2")
    return HTMLResponse(page.render(**context), status_code=status)


def _unsubscribe_request(settings: Settings, token: str) -> Any:
    if not token or len(token) > _MAX_UNSUBSCRIBE_TOKEN or not token.isascii():
        return None
    return read_unsubscribe_token(settings.secret("link_signing_key"), token)


_NOT_VALID = "This unsubscribe link is not valid."


@router.get("/v1/unsubscribe/{token}", tags=["mail webhooks"], response_class=HTMLResponse)
async def unsubscribe_page(token: str, settings: SettingsDep) -> HTMLResponse:
    """The footer link: a page naming the address, with a button that unsubscribes (a POST).

    A GET changes nothing, because mail scanners and link previews fetch every link in a
    message; a person's click on the button, or the mail client's RFC 8058 one-click POST, does.
    """
    req = _unsubscribe_request(settings, token)
    if req is None:
        return _unsubscribe_page(settings, 404, problem=_NOT_VALID)
    return _unsubscribe_page(
        settings,
        email=req.contact_email,
        sender=req.sender_email,
        action=f"/v1/unsubscribe/{urllib.parse.quote(token, safe='')}",
    )


@router.post("/v1/unsubscribe/{token}", tags=["mail webhooks"])
async def unsubscribe(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> Any:
    """Unsubscribe, no login: effective at once for every campaign of that sender.

    Two callers: the mail client's RFC 8058 one-click POST (body ``List-Unsubscribe=One-Click``,
    answered with JSON) and the button of the footer link's page (answered with a page). The
    token is signed and names one address and one sender, so it can do nothing else; doing it
    twice is harmless.
    """
    body = await _bounded_body(request, MAX_JSON_BODY)
    form = urllib.parse.parse_qs(body.decode("latin-1"), max_num_fields=10)
    from_page = form.get("confirm") == ["yes"]
    req = _unsubscribe_request(settings, token)
    if req is None:
        if from_page:
            return _unsubscribe_page(settings, 404, problem=_NOT_VALID)
        raise ApiError(404, "not_found", _NOT_VALID)
    source = "page" if from_page else "one-click"
    stopped = await campaigns_db.unsubscribe(
        session,
        sender_email=req.sender_email,
        contact_email=req.contact_email,
        source=f"link:{source}:{req.campaign_id}",
    )
    await session.commit()
    await tell_unsubscribed(temporal, stopped, req.contact_email, how=source)
    if from_page:
        return _unsubscribe_page(
            settings, done=True, email=req.contact_email, sender=req.sender_email
        )
    return {"unsubscribed": True, "email": req.contact_email, "sender": req.sender_email}
