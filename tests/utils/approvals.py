"""Helpers for tests that act as approvers through the sandbox (Slack clicks, emailed links)."""

from __future__ import annotations

import re

import httpx

from tests.utils.polling import eventually

__all__ = ["eventually"]

LINK = re.compile(r"(http://\S+/v1/approvals/links/[A-Za-z0-9_.\-]+)")


async def slack_messages(http: httpx.AsyncClient, email: str) -> list[dict]:
    resp = await http.get("/_sandbox/slack/messages", params={"user_email": email})
    assert resp.status_code == 200, resp.text
    return resp.json()["messages"]


def _step_of(message: dict) -> str | None:
    for block in message.get("blocks") or []:
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            if el.get("action_id") == "approve":
                return el.get("value")
    return None


async def slack_request_for(http: httpx.AsyncClient, email: str, step_id: str, n: int = 1) -> dict:
    """Wait until ``email`` has ``n`` Slack messages with buttons for ``step_id``; the newest."""

    async def probe() -> dict | None:
        found = [m for m in await slack_messages(http, email) if _step_of(m) == step_id]
        return found[-1] if len(found) >= n else None

    return await eventually(probe, what=f"Slack message {n} for {step_id} to {email}")


async def click(http: httpx.AsyncClient, ts: str, action: str, email: str) -> dict:
    resp = await http.post(
        f"/_sandbox/slack/messages/{ts}/actions/{action}", json={"user_email": email}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def mails_to(http: httpx.AsyncClient, email: str) -> list[dict]:
    resp = await http.get("/_sandbox/mail/messages", params={"to": email})
    assert resp.status_code == 200, resp.text
    return resp.json()["messages"]


async def emailed_link(http: httpx.AsyncClient, email: str, step_id: str) -> str:
    """The signed link from the newest approval email about ``step_id`` sent to ``email``."""

    async def probe() -> str | None:
        for message in reversed(await mails_to(http, email)):
            text = message.get("text") or ""
            match = LINK.search(text)
            if match and f"Reference: {step_id}" in text:
                return match.group(1)
        return None

    return await eventually(probe, what=f"approval email to {email}")


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]
