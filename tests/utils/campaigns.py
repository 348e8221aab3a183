"""Helpers for tests (and the benchmark) that drive campaigns through the API."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from sqlalchemy.dialects.postgresql import insert
from temporalio.service import RPCError, RPCStatusCode

from api.routes.mail_webhooks import sign
from db.campaign_models import SenderMailbox
from dealflow.ids import sequence_workflow_id
from dealflow.settings import load_sandbox_file
from messages.campaign import SequenceStatus
from workflows.sequence import SequenceWorkflow

T = TypeVar("T")

MAIL_SECRET = load_sandbox_file()["secrets"]["mail_webhook_secret"]


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def contact(email: str, **extra: Any) -> dict[str, Any]:
    first = email.split("@")[0].split(".")[0].capitalize()
    body = {
        "email": email,
        "first_name": first,
        "last_name": "Tester",
        "company": f"{email.split('@')[1]} Inc",
        "title": "VP Operations",
        "timezone": "America/New_York",
        "country": "US",
    }
    body.update(extra)
    return body


def email_step(
    subject: str | None = "Quick question, {{ first_name }}",
    body: str = "Hi {{ first_name }},\n\nDoes {{ company }} still run approvals by email?\n\nMaya",
    wait_days: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    step: dict[str, Any] = {"channel": "email", "wait_days": wait_days, "body": body}
    if subject is not None:
        step["subject"] = subject
    step.update(extra)
    return step


def campaign_payload(
    contacts: list[dict[str, Any]],
    *,
    sender_email: str | None = None,
    steps: list[dict[str, Any]] | None = None,
    daily_limit: int = 500,
    test_mode: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": unique("Campaign "),
        "sender": {
            "email": sender_email or f"maya.chen+{unique()}@dealflow.example",
            "name": "Maya Chen",
            "daily_limit": daily_limit,
            "timezone": "America/Los_Angeles",
        },
        "steps": steps or [email_step(), email_step(subject=None, body="Following up.")],
        "contacts": contacts,
        "test_mode": test_mode if test_mode is not None else {"wait_day_seconds": 0},
    }
    body.update(extra)
    return body


async def seasoned_sender(sessions, email: str, daily_limit: int = 100_000) -> None:
    """A mailbox past its warm-up (first send a year ago), so only its own limit applies."""
    async with sessions.begin() as s:
        await s.execute(
            insert(SenderMailbox)
            .values(
                email=email.lower(),
                daily_limit=daily_limit,
                timezone="America/Los_Angeles",
                first_send_date=dt.date.today() - dt.timedelta(days=365),
            )
            .on_conflict_do_nothing()
        )


async def create_and_launch(
    http: httpx.AsyncClient, headers: dict[str, str], payload: dict[str, Any]
) -> str:
    resp = await http.post("/v1/campaigns", json=payload, headers=headers)
    assert resp.status_code == 201, resp.text
    campaign_id = resp.json()["id"]
    resp = await http.post(f"/v1/campaigns/{campaign_id}/launch", headers=headers)
    assert resp.status_code == 202, resp.text
    return campaign_id


async def poll(
    what: str,
    attempt: Callable[[], Awaitable[T | None]],
    timeout: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Call ``attempt`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await attempt()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not reached in {timeout:.0f}s (last: {last!r})")


def signed_headers(body: bytes, *, secret: str = MAIL_SECRET, at: int | None = None) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Dealflow-Signature": sign(secret, body, at),
    }


async def post_signed(
    http: httpx.AsyncClient, path: str, payload: Any, **kw: Any
) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await http.post(path, content=body, headers=signed_headers(body, **kw))


async def reply(
    http: httpx.AsyncClient,
    *,
    to_message: dict[str, Any],
    text: str,
    from_email: str | None = None,
    subject: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Answer a captured message through the inbound webhook, threaded as a mail client does."""
    message_id = to_message["message_id"]
    payload = {
        "from": from_email or to_message["to"][0],
        "to": to_message["from"],
        "subject": subject or f"Re: {to_message['subject']}",
        "text": text,
        "headers": {
            "Message-ID": f"<{uuid.uuid4().hex}@mail.example>",
            "References": message_id,
            **(headers or {}),
        },
        "in_reply_to": message_id,
    }
    return await post_signed(http, "/v1/webhooks/email/inbound", payload)


def mail_to(sandbox, email: str) -> list[dict[str, Any]]:
    """Captured messages to one address (the sandbox store, as GET /_sandbox/mail does)."""
    return [m.model_dump(by_alias=True) for m in sandbox.state.mail.list(to=email)]


def header(message: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in message["headers"] if k.lower() == name.lower()), None)


async def launch_on_queue(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    payload: dict[str, Any],
    *,
    sessions,
    temporal_client,
    settings,
    task_queue: str,
) -> str:
    """Create a campaign and launch it as the API does, but on ``task_queue``.

    For tests that control the worker themselves (crash tests, the in-flight race tests).
    """
    from api.campaigns import start_campaign
    from db import campaigns as campaigns_db

    resp = await http.post("/v1/campaigns", json=payload, headers=headers)
    assert resp.status_code == 201, resp.text
    campaign_id = resp.json()["id"]
    async with sessions.begin() as s:
        campaign = await campaigns_db.get_campaign(s, campaign_id=campaign_id, lock="update")
        await campaigns_db.upsert_mailbox(
            s,
            email=campaign.sender_email,
            daily_limit=campaign.sender_daily_limit,
            timezone=campaign.sender_timezone,
        )
        campaign.status = "active"
        campaign.launched_at = campaigns_db.now_utc()
        campaign.preflight = {"state": "running"}
    await start_campaign(
        temporal_client, settings.model_copy(update={"task_queue": task_queue}), campaign
    )
    return campaign_id


def campaign_mail(sandbox, campaign_id: str) -> list:
    """Captured messages of one campaign (its X-Dealflow-Campaign header)."""
    return [
        m
        for m in sandbox.state.mail.list()
        if any(k.lower() == "x-dealflow-campaign" and v == campaign_id for k, v in m.headers)
    ]


async def sequence_statuses(temporal_client, campaign_id, people):
    """Every sequence's status query; a sequence not started yet counts as ``SequenceStatus``
    in state "unknown" (so "all in state X" is simply false)."""

    async def one(email):
        handle = temporal_client.get_workflow_handle_for(
            SequenceWorkflow.run, sequence_workflow_id(campaign_id, email)
        )
        try:
            return await handle.query(SequenceWorkflow.status)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return SequenceStatus(campaign_id=campaign_id, contact_email=email, state="unknown")

    return await asyncio.gather(*(one(e) for e in people))
