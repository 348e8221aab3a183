"""Signature: DocuSign Connect webhooks, the wet-signature upload, and the closing retry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse
from temporalio.service import RPCError, RPCStatusCode

from activities.signature import store_document
from api import signature
from api.access import deal_or_404, require_deal_owner
from api.closure import closure_status, signal_offline_signed, signal_retry_closing
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError
from db.audit import append_audit
from dealflow import limits
from dealflow.ids import connect_event_key
from integrations.docusign import KEY_FIELD
from messages.signature import ConnectEvent, OfflineSignature

log = logging.getLogger("dealflow.api.signature")
router = APIRouter(tags=["signature"])

MAX_UPLOAD_BYTES = limits.MAX_UPLOAD_BODY


def _connect_signatures_valid(raw: bytes, headers: Any, keys: list[str]) -> bool:
    """DocuSign's scheme: base64(HMAC-SHA256(key, body)) in X-DocuSign-Signature-1..N.

    Any header matching any configured key passes (DocuSign sends one signature per active key,
    which is how keys are rotated without downtime).
    """
    # Bytes, not str: compare_digest raises on a non-ASCII str (a header with a stray "é" was a
    # 500). Header values arrive as latin-1, so encoding them back is lossless and never fails.
    sent = [
        v.strip().encode("latin-1")
        for k, v in headers.items()
        if k.lower().startswith("x-docusign-signature-")
    ]
    for key in keys:
        expected = base64.b64encode(hmac.new(key.encode(), raw, hashlib.sha256).digest())
        if any(hmac.compare_digest(expected, s) for s in sent):
            return True
    return False


@router.post("/v1/webhooks/docusign")
async def docusign_connect(
    request: Request, settings: SettingsDep, temporal: TemporalDep
) -> JSONResponse:
    """DocuSign Connect (JSON), verified by HMAC; becomes a signal to the signature tracking."""
    raw = await request.body()
    keys = [k.strip() for k in settings.secret("docusign_connect_hmac_key").split(",")]
    if not _connect_signatures_valid(raw, request.headers, keys):
        raise ApiError(401, "bad_signature", "X-DocuSign-Signature-N does not verify.")
    try:
        payload = json.loads(raw)
        data = payload["data"]
        envelope_id = data["envelopeId"]
        fields = ((data.get("envelopeSummary") or {}).get("customFields") or {}).get(
            "textCustomFields"
        ) or []
        key = next((f.get("value") for f in fields if f.get("name") == KEY_FIELD), None)
        recipient = None
        if data.get("recipientId"):
            signers = ((data.get("envelopeSummary") or {}).get("recipients") or {}).get("signers")
            recipient = next(
                (
                    s.get("email")
                    for s in signers or []
                    if s.get("recipientId") == data["recipientId"]
                ),
                None,
            )
    # Signed but not shaped like Connect JSON: not an object where one is expected (TypeError,
    # AttributeError), not UTF-8 or JSON (ValueError), nested past the parser (RecursionError).
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ApiError(400, "bad_payload", "Not a DocuSign Connect JSON message.") from None
    if not isinstance(key, str) or ".v" not in key:
        return JSONResponse({"received": True, "matched": False})
    deal_id, _, version = key.rpartition(".v")
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        return JSONResponse({"received": True, "matched": False})
    try:
        await signature.connect_event(
            temporal,
            deal_id,
            int(version),
            ConnectEvent(
                key=connect_event_key(payload),
                event=str(payload.get("event")),
                envelope_id=envelope_id,
                recipient_email=recipient,
            ),
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # The tracking already ended (or never existed): acknowledge, or DocuSign retries.
        return JSONResponse({"received": True, "matched": False})
    return JSONResponse({"received": True, "matched": True})


@router.post("/v1/deals/{deal_id}/signature/offline", status_code=202)
async def offline_signature(
    deal_id: str,
    file: UploadFile,
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Upload a wet-signed PDF: the envelope is voided and signature completes as ``wet``."""
    deal = await deal_or_404(session, deal_id)
    require_deal_owner(person, deal)
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ApiError(422, "file_too_large", "The PDF is larger than 25 MB.")
    if not data.startswith(b"%PDF-"):
        raise ApiError(
            422,
            "not_a_pdf",
            "The upload is not a PDF file.",
            [{"field": "file", "message": "must be a PDF"}],
        )
    live = await closure_status(temporal, deal.id)
    if live is None or live.stage != "awaiting_signature" or not live.signature_workflow_id:
        raise ApiError(409, "not_awaiting_signature", "The deal is not waiting for a signature.")
    assert live.quote is not None
    ref = await store_document(
        settings,
        request.app.state.sessions,
        deal_id=deal.id,
        version=live.quote.version,
        kind="wet_signed",
        data=data,
        reason=f"Wet-signed copy uploaded by {person.email}",
        actor=person.email,
    )
    await signal_offline_signed(temporal, deal.id, OfflineSignature(document=ref, by=person.email))
    return {"document": ref.model_dump(), "status": "accepted"}


@router.post("/v1/deals/{deal_id}/closing/retry", status_code=202)
async def retry_closing(
    deal_id: str, person: CurrentPerson, session: SessionDep, temporal: TemporalDep
) -> dict[str, Any]:
    """Ops: after fixing what made closing fail, resume the saga where it stopped."""
    if not {"ops", "admin"} & set(person.roles):
        raise ApiError(403, "forbidden", "Only ops may retry closing.")
    deal = await deal_or_404(session, deal_id)
    if deal.stage == "draft":
        raise ApiError(409, "no_closure", "This deal has no closure to retry.")
    await append_audit(
        session,
        deal_id=deal.id,
        actor=person.email,
        channel="api",
        event="closing.retry_requested",
        detail={},
    )
    await session.commit()
    try:
        await signal_retry_closing(temporal, deal.id, person.email)
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # The closure has ended: nothing to retry; a state of the deal, not a server error.
        raise ApiError(409, "closure_ended", "This deal's closure has already ended.") from None
    return {"status": "retry requested"}
