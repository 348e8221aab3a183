"""Approvals: three doors to one decision (API, signed link, Slack button), out of office, audit.

Every door ends in the same Temporal update (``ApprovalChainWorkflow.decide``), whose validator
decides who may decide; the API only authenticates the caller and maps refusals to 403/409.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api import approval as approval_chain
from api.access import deal_or_404, owns_or_operates
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import ApiError
from api.fields import BoundedText
from api.pages import page_env
from api.unavailable import TemporalUnavailable
from db import approvals as approvals_db
from db import deals as deals_db
from db.audit import append_audit, deal_events, verify_chain
from db.models import ApprovalLink
from db.org import get_person
from dealflow import limits
from dealflow.links import InvalidToken, parse_token
from dealflow.settings import Settings
from domain.money import plain_decimal, quantize
from messages.approval import ApprovalStep, DecisionRequest, Reassignment

log = logging.getLogger("dealflow.api.approvals")
router = APIRouter(tags=["approvals"])

Decision = Literal["approve", "reject", "request_changes"]
Comment = BoundedText(limits.COMMENT)
# Slack wants an answer within 3 s; past this we answer and let the decision finish behind.
SLACK_ANSWER_WITHIN = 2.5
_REFUSALS = {
    "NotAllowed": (403, "forbidden"),
    # The deal's owner, by any door (API, link, Slack; as delegate or escalation target).
    "OwnerMayNotDecide": (403, "forbidden"),
    "AlreadyDecided": (409, "already_decided"),
    "NotPending": (409, "not_pending"),
    "UnknownStep": (404, "not_found"),
    "BadDecision": (422, "invalid_request"),
}


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Decision
    comment: Comment | None = None


class OutOfOfficeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: dt.datetime
    delegate_email: EmailStr


async def decide(
    temporal: Client,
    session: SessionDep,
    *,
    step_id: str,
    actor: str,
    decision: str,
    comment: str | None,
    channel: str,
) -> ApprovalStep:
    """Send the decision to the chain that holds the step; map its refusals to API errors."""
    row = await approvals_db.get_step(session, step_id=step_id)
    if row is None:
        raise ApiError(404, "not_found", f"Approval step {step_id} does not exist.")
    try:
        return await approval_chain.decide(
            temporal,
            row.workflow_id,
            DecisionRequest(
                step_id=step_id,
                actor_email=actor,
                decision=decision,
                comment=comment,
                channel=channel,
            ),
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type in _REFUSALS:
            status, code = _REFUSALS[cause.type]
            raise ApiError(status, code, cause.message) from None
        raise
    except RPCError as err:
        if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            raise
        if await approval_chain.is_running(temporal, row.workflow_id):
            # The chain runs but never took this update: it was lost with a server restart
            # (an update lives in the server's memory until the workflow accepts it), or came
            # as the chain's worker went away. Nothing was decided: 503, send it again.
            log.warning("decision on %s did not reach its running chain: %s", step_id, err.status)
            raise TemporalUnavailable(f"the decision did not reach {row.workflow_id}") from None
        decided = f" (decided by {row.decided_by})" if row.decided_by else ""
        raise ApiError(
            409, "not_pending", f"This approval is no longer open: {row.status}{decided}."
        ) from None


@router.post("/v1/approvals/{step_id}/decision", response_model=ApprovalStep)
async def post_decision(
    step_id: str,
    body: DecisionCreate,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> ApprovalStep:
    """Decide an approval step (its holder, their delegate, or the escalation target)."""
    require_role(person, "approver")
    return await decide(
        temporal,
        session,
        step_id=step_id,
        actor=person.email,
        decision=body.decision,
        comment=body.comment,
        channel="api",
    )


# --- the signed link page --------------------------------------------------------------------


def _page(settings: Settings, status: int, **context: Any) -> HTMLResponse:
    context.setdefault("outcome", None)
    context.setdefault("refused", False)
    context.setdefault("summary", None)
    html = page_env(settings).get_template("approvals/link_page.html.j2").render(**context)
    return HTMLResponse(html, status_code=status)


async def _link(
    session: SessionDep, settings: Settings, token: str
) -> tuple[ApprovalLink | None, str | None, int]:
    """The link row, or why it cannot be used (message, status)."""
    try:
        token_id = parse_token(settings.secret("link_signing_key"), token, now_unix=time.time())
    except InvalidToken as err:
        status = 403 if str(err) == "expired" else 404
        message = "This link has expired." if status == 403 else "This link is not valid."
        return None, message, status
    link = await approvals_db.get_link(session, token_id=token_id)
    if link is None:
        return None, "This link is not valid.", 404
    if link.used_at is not None:
        return link, "This link has already been used.", 409
    if link.revoked_at is not None:
        return link, "This approval is no longer open.", 409
    if link.expires_at < dt.datetime.now(dt.UTC):
        return link, "This link has expired.", 403
    return link, None, 200


async def _page_context(session: SessionDep, link: ApprovalLink) -> dict[str, Any]:
    req = await approvals_db.get_step(session, step_id=link.step_id)
    assert req is not None
    deal = await deals_db.get_deal(session, deal_id=req.deal_id)
    qv = await deals_db.get_quote_version(session, deal_id=req.deal_id, version=req.quote_version)
    assert deal is not None and qv is not None
    summary = {
        "name": deal.name,
        "customer": deal.account_name,
        "total": str(quantize(qv.total, qv.currency)),
        "currency": qv.currency,
        "discount_pct": plain_decimal(deal.discount_pct),
        "term_months": deal.term_months,
        "owner_email": deal.owner_email,
    }
    return {
        "title": f"Approve {deal.name}?",
        "summary": summary,
        "reason": req.reason,
        "role_label": req.role.replace("_", " ").title(),
        "approver_email": link.approver_email,
        "due_at": req.due_at,
        "request": req,
    }


@router.get("/v1/approvals/links/{token}", response_class=HTMLResponse)
async def link_page(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """The page an approver opens from Slack or email: summary, reason, three buttons."""
    link, problem, status = await _link(session, settings, token)
    if problem is not None:
        return _page(settings, status, title="Approval link", outcome=problem, refused=True)
    assert link is not None
    return _page(settings, 200, **await _page_context(session, link))


@router.post("/v1/approvals/links/{token}")
async def link_decision(
    token: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
) -> Any:
    """Record the decision made on the link page (form) or by a JSON client; the link is spent."""
    wants_json = request.headers.get("content-type", "").startswith("application/json")
    raw = await request.body()
    try:
        if wants_json:
            body = DecisionCreate.model_validate_json(raw)
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            body = DecisionCreate.model_validate(
                {"decision": form.get("decision"), "comment": form.get("comment") or None}
            )
    except ValueError:
        raise ApiError(
            422, "invalid_request", "decision must be approve, reject or request_changes."
        ) from None

    def answer(status: int, message: str, *, code: str = "ok", refused: bool = False) -> Any:
        if wants_json:
            if refused:
                raise ApiError(status, code, message)
            return JSONResponse({"outcome": message}, status_code=status)
        return _page(settings, status, title="Approval", outcome=message, refused=refused)

    link, problem, status = await _link(session, settings, token)
    if problem is not None:
        return answer(status, problem, code="link_unusable", refused=True)
    assert link is not None
    # Spend the link first, atomically: of two racing submissions only one gets this far.
    if not await approvals_db.spend_link(
        session, token_id=link.token_id, at=dt.datetime.now(dt.UTC)
    ):
        await session.rollback()
        return answer(409, "This link has already been used.", code="link_used", refused=True)
    await session.commit()
    try:
        step = await decide(
            temporal,
            session,
            step_id=link.step_id,
            actor=link.approver_email,
            decision=body.decision,
            comment=body.comment,
            channel="link",
        )
    except ApiError as err:
        return answer(err.status, err.message, code=err.code, refused=True)
    except Exception:
        # Not a refusal but a failure to reach the workflow: give the link back.
        await approvals_db.give_link_back(session, token_id=link.token_id)
        await session.commit()
        raise
    verb = {
        "approved": "Approved",
        "rejected": "Rejected",
        "changes_requested": "Changes requested",
    }[step.status]
    return answer(200, f"{verb}. Thank you — your decision is recorded.")


# --- Slack interactivity ---------------------------------------------------------------------


@router.post("/v1/webhooks/slack/interactions")
async def slack_interactions(
    request: Request, session: SessionDep, settings: SettingsDep, temporal: TemporalDep
) -> JSONResponse:
    """Slack block_actions: verified by signature and timestamp, answered within 3 seconds."""
    raw = await request.body()
    if not _slack_request_valid(settings.secret("slack_signing_secret"), raw, request.headers):
        raise ApiError(401, "bad_signature", "Slack signature or timestamp is not valid.")
    try:
        payload = json.loads(parse_qs(raw.decode())["payload"][0])
        action = payload["actions"][0]
        user_id = payload["user"]["id"]
    except (KeyError, IndexError, ValueError):
        raise ApiError(400, "bad_payload", "Not a Slack block_actions payload.") from None
    if action.get("action_id") not in ("approve", "reject", "request_changes"):
        return JSONResponse({})  # e.g. the "Open in browser" URL button: nothing to do
    person = await approvals_db.person_by_slack_user(session, slack_user_id=user_id)
    if person is None:
        return _ephemeral("Your Slack account is not linked to a dealflow approver.")
    work = asyncio.ensure_future(
        decide(
            temporal,
            session,
            step_id=action.get("value", ""),
            actor=person.email,
            decision=action["action_id"],
            comment=None,
            channel="slack",
        )
    )
    try:
        step = await asyncio.wait_for(asyncio.shield(work), timeout=SLACK_ANSWER_WITHIN)
    except TimeoutError:
        log.warning("slack decision still running after %.1fs; answering now", SLACK_ANSWER_WITHIN)
        return _ephemeral("Recording your decision…")
    except ApiError as err:
        return _ephemeral(f"Not recorded: {err.message}")
    return _ephemeral(f"Recorded: {step.status.replace('_', ' ')} by {person.email}.")


# Slack's headers as Slack sends them: Unix seconds (10 digits until the year 2286) and "v0="
# with a hex HMAC-SHA256. Anything else is refused before slack_sdk sees it: it calls int() on
# the timestamp and compare_digest() on the signature, which raise (a 500) on garbage.
_SLACK_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SLACK_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def _slack_request_valid(secret: str, raw: bytes, headers: Any) -> bool:
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not (_SLACK_TIMESTAMP.fullmatch(timestamp) and _SLACK_SIGNATURE.fullmatch(signature)):
        return False
    try:
        return SignatureVerifier(secret).is_valid(raw, timestamp, signature)
    except UnicodeDecodeError:  # slack_sdk decodes the body as UTF-8 before hashing it
        return False


def _ephemeral(text: str) -> JSONResponse:
    return JSONResponse({"response_type": "ephemeral", "replace_original": False, "text": text})


# --- out of office ---------------------------------------------------------------------------


@router.put("/v1/approvers/{email}/out-of-office")
async def out_of_office(
    email: str,
    body: OutOfOfficeUpdate,
    person: CurrentPerson,
    session: SessionDep,
    temporal: TemporalDep,
) -> dict[str, Any]:
    """Mark an approver out of office; their pending requests move to the delegate."""
    if person.email != email and "admin" not in person.roles:
        raise ApiError(403, "forbidden", "Only the approver or an admin may set this.")
    approver = await get_person(session, email=email)
    if approver is None:
        raise ApiError(404, "not_found", f"{email} is not in the org directory.")
    delegate = await get_person(session, email=str(body.delegate_email))
    if delegate is None or delegate.email == email:
        raise ApiError(
            422,
            "invalid_request",
            "The delegate must be another person in the org directory.",
            [{"field": "delegate_email", "message": "unknown"}],
        )
    until = body.until if body.until.tzinfo else body.until.replace(tzinfo=dt.UTC)
    if until <= dt.datetime.now(dt.UTC):
        raise ApiError(
            422,
            "invalid_request",
            "until must be in the future.",
            [{"field": "until", "message": "in the past"}],
        )
    approvals_db.set_out_of_office(approver, until=until, delegate_email=delegate.email)
    await append_audit(
        session,
        deal_id=None,
        actor=person.email,
        channel="api",
        event="approver.out_of_office",
        detail={"approver": email, "until": until.isoformat(), "delegate": delegate.email},
    )
    pending = await approvals_db.pending_steps_held_by(session, email=email)
    await session.commit()
    change = Reassignment(
        approver_email=email,
        delegate_email=delegate.email,
        reason=f"out of office until {until:%Y-%m-%d}",
    )
    told = set()
    for workflow_id in sorted({w for _, w in pending}):
        if await approval_chain.reassign(temporal, workflow_id, change):
            told.add(workflow_id)
        else:
            log.warning("out of office: %s no longer runs; its steps stay as they are", workflow_id)
    return {
        "email": email,
        "until": until,
        "delegate_email": delegate.email,
        "moved_steps": sorted(s for s, w in pending if w in told),
    }


# --- the audit trail -------------------------------------------------------------------------


@router.get("/v1/deals/{deal_id}/audit")
async def deal_audit(deal_id: str, person: CurrentPerson, session: SessionDep) -> dict[str, Any]:
    """Every audited event of the deal, and whether the hash chain verifies."""
    deal = await deal_or_404(session, deal_id)
    if not owns_or_operates(person, deal):
        raise ApiError(403, "forbidden", "Only the owner and ops may read the audit trail.")
    events = await deal_events(session, deal_id=deal_id)
    check = await verify_chain(session)
    return {
        "deal_id": deal_id,
        "events": [
            {
                "id": e.id,
                "at": e.at,
                "actor": e.actor,
                "channel": e.channel,
                "event": e.event,
                "detail": e.detail,
                "hash": e.hash,
                "prev_hash": e.prev_hash,
            }
            for e in events
        ],
        "verification": {
            "ok": check.ok,
            "checked": check.checked,
            "first_bad_id": check.first_bad_id,
            "problem": check.problem,
        },
    }
