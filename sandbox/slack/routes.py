"""The Slack sandbox's HTTP side: the Web API and response_url endpoints, the control API that
plays the person in Slack, and signed `block_actions` deliveries to the service."""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Annotated, Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from sandbox.slack.methods import METHODS, SlackApiError
from sandbox.slack.store import Delivery, RecordedCall, SlackStore, StoredMessage, _now, _us_to_ts
from sandbox.slack.web_api import _blocks_arg, _call, _request_args, find_button, slack_message
from sandbox.slack.workspace import (
    APP_ID,
    DELIVERY_TIMEOUT_SECONDS,
    SLACK_ACK_DEADLINE_SECONDS,
    TEAM_DOMAIN,
    TEAM_ID,
    VERIFICATION_TOKEN,
    SlackUser,
    sign_request,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The HTTP routes.


class ActionRequest(BaseModel):
    """A click, as the control API takes it: who clicks, and optionally a value to send."""

    user_email: str
    value: str | None = Field(
        default=None, description="Sent instead of the button's own value, if given."
    )


class SlackMessageList(BaseModel):
    messages: list[StoredMessage]


class SlackCallList(BaseModel):
    calls: list[RecordedCall]


class DeliveryList(BaseModel):
    deliveries: list[Delivery]


class ClearedSlack(BaseModel):
    deleted: int


def _error(status: int, code: str, message: str) -> JSONResponse:
    """The project's error shape (API.md), for the control API."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def build_block_actions_payload(
    *,
    message: StoredMessage,
    user: SlackUser,
    block_id: str,
    button: dict[str, Any],
    value: str | None,
    response_url: str,
) -> dict[str, Any]:
    """The `block_actions` payload Slack posts when `user` clicks `button` on `message`."""
    now_us = time.time_ns() // 1000
    action: dict[str, Any] = {
        "action_id": button["action_id"],
        "block_id": block_id,
        "text": {
            "type": "plain_text",
            "text": str((button.get("text") or {}).get("text", "")),
            "emoji": bool((button.get("text") or {}).get("emoji", True)),
        },
        "type": "button",
        "action_ts": _us_to_ts(now_us),
    }
    chosen = value if value is not None else button.get("value")
    if chosen is not None:
        action["value"] = chosen
    if "style" in button:
        action["style"] = button["style"]
    return {
        "type": "block_actions",
        "user": {
            "id": user.id,
            "username": user.name,
            "name": user.name,
            "team_id": TEAM_ID,
        },
        "api_app_id": APP_ID,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": message.ephemeral,
        },
        "trigger_id": (
            f"{now_us // 1_000_000}{secrets.randbelow(1000):03d}."
            f"{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        ),
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message.channel, "name": message.channel_name},
        "message": slack_message(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


async def deliver_interaction(
    url: str, signing_secret: str, payload: dict[str, Any]
) -> tuple[httpx.Response, float]:
    """POST a payload as Slack does: form-encoded `payload=<json>`, signed; returns (reply, ms)."""
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sign_request(signing_secret, timestamp, body),
    }
    started = time.perf_counter()
    async with httpx.AsyncClient(trust_env=False, timeout=DELIVERY_TIMEOUT_SECONDS) as client:
        response = await client.post(url, content=body.encode(), headers=headers)
    return response, (time.perf_counter() - started) * 1000


def create_slack_router(store: SlackStore) -> APIRouter:
    """The Slack Web API stand-in, response URLs, and the Slack sandbox's control API."""
    router = APIRouter()

    @router.api_route("/slack/api/{method}", methods=["GET", "POST"], tags=["sandbox: slack"])
    async def web_api(method: str, request: Request) -> JSONResponse:
        """One Web API method; failures are HTTP 200 with `ok: false`, as Slack answers."""
        spec = METHODS.get(method)
        if spec is None:
            unknown = {"ok": False, "error": "unknown_method", "req_method": method}
            store.record_call(method, request.method, {}, unknown)
            return JSONResponse(unknown)
        if request.method not in spec.verbs:
            return JSONResponse({"ok": False, "error": "method_not_allowed"}, status_code=405)
        raw: dict[str, Any] = {}
        try:
            raw = await _request_args(request, spec)
            result = _call(store, method, spec, raw)
        except SlackApiError as failure:
            result = {"ok": False, "error": failure.code}
        logged = {k: v for k, v in raw.items() if k != "token"}
        store.record_call(method, request.method, logged, result)
        return JSONResponse(result)

    @router.post("/slack/response_url/{hook_id}", tags=["sandbox: slack"])
    async def response_url(hook_id: str, request: Request) -> JSONResponse:
        """An app's reply to a click: replace or delete the message, or post a response."""
        hook = store.hook(hook_id)
        if hook is None:
            return JSONResponse({"ok": False, "error": "expired_url"}, status_code=404)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"ok": False, "error": "invalid_payload"}, status_code=400)
        try:
            blocks = _blocks_arg(body.get("blocks"))
        except SlackApiError as failure:
            return JSONResponse({"ok": False, "error": failure.code}, status_code=400)
        text = body.get("text")
        if body.get("delete_original") in (True, "true"):
            store.delete(hook.ts)
        elif body.get("replace_original") in (True, "true"):
            if (
                store.update(
                    hook.ts,
                    text=str(text) if text is not None else None,
                    blocks=blocks,
                    via="response_url",
                )
                is None
            ):
                return JSONResponse({"ok": False, "error": "message_not_found"}, status_code=404)
        else:
            original = store.message(hook.ts)
            in_channel = body.get("response_type") == "in_channel"
            user = store.workspace.user_by_id(hook.user_id)
            store.post(
                channel=hook.channel,
                channel_name=original.channel_name if original else hook.channel,
                user=_dm_user(store, original) if in_channel else user,
                text=str(text or ""),
                blocks=blocks or [],
                thread_ts=str(body["thread_ts"]) if body.get("thread_ts") else None,
                ephemeral=not in_channel,
            )
        return JSONResponse({"ok": True})

    @router.get(
        "/_sandbox/slack/messages", response_model=SlackMessageList, tags=["sandbox: slack"]
    )
    def list_messages(
        channel: Annotated[str | None, Query(description="Conversation ID or name.")] = None,
        user_email: Annotated[
            str | None, Query(description="The person a DM (or ephemeral reply) is with.")
        ] = None,
    ) -> SlackMessageList:
        """Messages posted, oldest first, with their current blocks and every update."""
        return SlackMessageList(messages=store.messages(channel=channel, user_email=user_email))

    @router.delete("/_sandbox/slack/messages", response_model=ClearedSlack, tags=["sandbox: slack"])
    def clear_messages() -> ClearedSlack:
        """Forget messages, calls and deliveries, for a clean slate while working locally."""
        return ClearedSlack(deleted=store.clear())

    @router.get("/_sandbox/slack/calls", response_model=SlackCallList, tags=["sandbox: slack"])
    def list_calls(
        method: Annotated[str | None, Query(description="A Web API method name.")] = None,
    ) -> SlackCallList:
        """Every Web API request received (tokens left out) and the answer given."""
        return SlackCallList(calls=store.calls(method=method))

    @router.get("/_sandbox/slack/deliveries", response_model=DeliveryList, tags=["sandbox: slack"])
    def list_deliveries() -> DeliveryList:
        """Every interaction payload posted to the service, with its answer."""
        return DeliveryList(deliveries=store.deliveries())

    @router.post("/_sandbox/slack/messages/{ts}/actions/{action_id}", tags=["sandbox: slack"])
    async def click(ts: str, action_id: str, body: ActionRequest, request: Request) -> Any:
        """Click a button as `user_email`: post the signed block_actions payload to the service.

        Answers `{"delivered": true, "status_code", "response", ...}` with the service's
        reply; 404 for an unknown message or button, 403 when the user is not in the
        conversation (only a DM's member sees its buttons), 502 if the service is unreachable.
        """
        workspace = store.workspace
        message = store.message(ts)
        if message is None or message.deleted:
            return _error(404, "message_not_found", f"no message with ts {ts}")
        found = find_button(message.blocks, action_id)
        if found is None:
            return _error(404, "action_not_found", f"message {ts} has no button {action_id!r}")
        user = workspace.user_by_email(body.user_email)
        if user is None:
            return _error(422, "unknown_user", f"{body.user_email} is not in the Slack workspace")
        if message.user_id is not None and message.user_id != user.id:
            return _error(403, "not_in_conversation", f"{body.user_email} cannot see message {ts}")
        if workspace.interactions_url is None:
            return _error(409, "no_interactions_url", "start the sandbox with an interactions URL")
        block_id, button = found
        hook = store.open_hook(channel=message.channel, ts=ts, user_id=user.id)
        payload = build_block_actions_payload(
            message=message,
            user=user,
            block_id=block_id,
            button=button,
            value=body.value,
            response_url=f"{str(request.base_url).rstrip('/')}/slack/response_url/{hook.id}",
        )
        started = time.perf_counter()

        def record(**outcome: Any) -> None:
            store.record_delivery(
                Delivery(
                    at=_now(),
                    ts=ts,
                    action_id=action_id,
                    user_email=user.email,
                    url=workspace.interactions_url,
                    payload=payload,
                    **outcome,
                )
            )

        try:
            reply, duration_ms = await deliver_interaction(
                workspace.interactions_url, workspace.signing_secret, payload
            )
        except httpx.HTTPError as failure:
            record(
                status_code=None,
                error=f"{type(failure).__name__}: {failure}",
                duration_ms=(time.perf_counter() - started) * 1000,
                within_slack_deadline=False,
            )
            return _error(
                502,
                "interactions_unreachable",
                f"could not deliver to {workspace.interactions_url}: {failure!r}",
            )
        try:
            answer: Any = reply.json()
        except ValueError:
            answer = reply.text
        within = duration_ms <= SLACK_ACK_DEADLINE_SECONDS * 1000
        record(
            status_code=reply.status_code,
            response=answer,
            duration_ms=duration_ms,
            within_slack_deadline=within,
        )
        logger.info(
            "delivered block_actions ts=%s action_id=%s user=%s -> %d",
            ts,
            action_id,
            user.email,
            reply.status_code,
        )
        return {
            "delivered": True,
            "status_code": reply.status_code,
            "response": answer,
            "duration_ms": round(duration_ms, 1),
            "within_slack_deadline": within,
        }

    return router


def _dm_user(store: SlackStore, message: StoredMessage | None) -> SlackUser | None:
    """The DM counterpart of a message, so an in-channel reply in a DM stays in that DM."""
    if message is None or message.user_id is None:
        return None
    return store.workspace.user_by_id(message.user_id)
