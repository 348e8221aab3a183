"""The Slack Web API methods the sandbox answers (`/slack/api/<method>`), with Slack's objects
and its `{"ok": false, "error": ...}` answers."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request

from sandbox.slack.methods import METHODS, CallArgs, MethodSpec, SlackApiError
from sandbox.slack.store import SlackStore, StoredMessage
from sandbox.slack.workspace import (
    _ALNUM,
    _CHANNEL_NAME,
    _CONVERSATION_ID,
    APP_ID,
    BOT_ID,
    BOT_USER_ID,
    BOT_USER_NAME,
    TEAM_DOMAIN,
    TEAM_ID,
    TEAM_NAME,
    SlackUser,
    SlackWorkspace,
)

# --------------------------------------------------------------------------------------
# Slack's objects.


def slack_message(message: StoredMessage) -> dict[str, Any]:
    """The message object Slack returns and puts in interaction payloads (a bot message)."""
    body: dict[str, Any] = {
        "type": "message",
        "text": message.text,
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "team": TEAM_ID,
        "ts": message.ts,
    }
    if message.blocks:
        body["blocks"] = message.blocks
    if message.metadata is not None:
        body["metadata"] = message.metadata
    if message.thread_ts is not None:
        body["thread_ts"] = message.thread_ts
    return body


def slack_user(user: SlackUser) -> dict[str, Any]:
    """A user object with every field Slack's spec requires (objs_user, objs_user_profile)."""
    tz_label, tz_offset = _tz_details(user.tz)
    return {
        "id": user.id,
        "team_id": TEAM_ID,
        "name": user.name,
        "deleted": False,
        "real_name": user.real_name,
        "tz": user.tz,
        "tz_label": tz_label,
        "tz_offset": tz_offset,
        "is_admin": False,
        "is_owner": False,
        "is_primary_owner": False,
        "is_restricted": False,
        "is_ultra_restricted": False,
        "is_bot": False,
        "is_app_user": False,
        "updated": 1_700_000_000,
        "profile": {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.real_name,
            "display_name_normalized": user.real_name,
            "email": user.email,
            "title": user.title,
            "phone": "",
            "skype": "",
            "status_text": "",
            "status_emoji": "",
            "fields": None,
            "avatar_hash": hashlib.sha256(user.email.encode()).hexdigest()[:12],
            "team": TEAM_ID,
        },
    }


def _tz_details(tz: str | None) -> tuple[str, int]:
    if tz is None:
        return "Coordinated Universal Time", 0
    try:
        moment = datetime.now(ZoneInfo(tz))
    except ZoneInfoNotFoundError:
        return tz, 0
    offset = moment.utcoffset()
    return moment.tzname() or tz, int(offset.total_seconds()) if offset is not None else 0


def _random_id(length: int = 5) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def _interactive_elements(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if block.get("type") == "actions":
        yield from (e for e in block.get("elements", []) if isinstance(e, dict))
    accessory = block.get("accessory")
    if isinstance(accessory, dict):
        yield accessory


def _normalize_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give blocks and interactive elements the IDs Slack assigns when the app omits them."""
    for block in blocks:
        block.setdefault("block_id", _random_id())
        for element in _interactive_elements(block):
            element.setdefault("action_id", _random_id())
    return blocks


def find_button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]] | None:
    """The (block_id, button) with this action_id, if the message has one."""
    for block in blocks:
        for element in _interactive_elements(block):
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
    return None


# --------------------------------------------------------------------------------------
# The Web API.


def _json_arg(value: Any, error: str) -> Any:
    """Form bodies carry blocks and metadata as JSON strings; JSON bodies as values."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiError(error) from None
    return value


def _blocks_arg(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    blocks = _json_arg(value, "invalid_blocks")
    if not isinstance(blocks, list) or not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks
    ):
        raise SlackApiError("invalid_blocks")
    return _normalize_blocks(blocks)


def _resolve_channel(
    workspace: SlackWorkspace, value: str, *, allow_user_id: bool
) -> tuple[str, str, SlackUser | None]:
    """(conversation id, channel name, DM counterpart) for a `channel` argument.

    A user ID opens (or reuses) the DM with that user, as chat.postMessage does; other
    methods need the conversation ID. A name gets a stable channel ID.
    """
    if allow_user_id and value[:1] in ("U", "W"):
        user = workspace.user_by_id(value)
        if user is None:
            raise SlackApiError("channel_not_found")
        return "D" + user.id, "directmessage", user
    if value.startswith("D"):
        user = workspace.user_by_id(value[1:])
        if user is None:
            raise SlackApiError("channel_not_found")
        return value, "directmessage", user
    if _CONVERSATION_ID.match(value):
        return value, value, None
    named = _CHANNEL_NAME.match(value)
    if named is None:
        raise SlackApiError("channel_not_found")
    name = named.group(1)
    return "C" + hashlib.sha256(name.encode()).hexdigest()[:10].upper(), name, None


def _auth_test(store: SlackStore, args: CallArgs) -> dict[str, Any]:
    return {
        "ok": True,
        "url": f"https://{TEAM_DOMAIN}.slack.com/",
        "team": TEAM_NAME,
        "user": BOT_USER_NAME,
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "is_enterprise_install": False,
    }


def _chat_post_message(store: SlackStore, args: CallArgs) -> dict[str, Any]:
    channel, name, user = _resolve_channel(
        store.workspace, str(args.get("channel")), allow_user_id=True
    )
    metadata = args.get("metadata")
    if metadata is not None:
        metadata = _json_arg(metadata, "invalid_metadata_format")
        if not isinstance(metadata, dict):
            raise SlackApiError("invalid_metadata_format")
    thread_ts = args.get("thread_ts")
    message = store.post(
        channel=channel,
        channel_name=name,
        user=user,
        text=str(args.get("text") or ""),
        blocks=_blocks_arg(args.get("blocks")) or [],
        metadata=metadata,
        thread_ts=str(thread_ts) if thread_ts is not None else None,
    )
    return {"ok": True, "channel": channel, "ts": message.ts, "message": slack_message(message)}


def _chat_update(store: SlackStore, args: CallArgs) -> dict[str, Any]:
    channel, _, _ = _resolve_channel(store.workspace, str(args.get("channel")), allow_user_id=False)
    ts = str(args.get("ts"))
    current = store.message(ts)
    if current is None or current.deleted or current.channel != channel:
        raise SlackApiError("message_not_found")
    text = args.get("text")
    updated = store.update(
        ts,
        text=str(text) if text is not None else None,
        blocks=_blocks_arg(args.get("blocks")),
        via="chat.update",
    )
    if updated is None:
        raise SlackApiError("message_not_found")
    return {
        "ok": True,
        "channel": channel,
        "ts": ts,
        "text": updated.text,
        "message": slack_message(updated),
    }


def _users_lookup_by_email(store: SlackStore, args: CallArgs) -> dict[str, Any]:
    user = store.workspace.user_by_email(str(args.get("email")))
    if user is None:
        raise SlackApiError("users_not_found")
    return {"ok": True, "user": slack_user(user)}


_HANDLERS = {
    "auth.test": _auth_test,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "users.lookupByEmail": _users_lookup_by_email,
}
assert set(_HANDLERS) == set(METHODS), "every declared method needs a handler, and vice versa"


async def _request_args(request: Request, spec: MethodSpec) -> dict[str, Any]:
    """Arguments from the query string and the body, plus the token, as Slack reads them.

    Slack takes the token from `Authorization: Bearer` or a `token` argument, but never
    from a JSON body; a JSON body counts only for methods that accept one.
    """
    args: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body:
        if content_type == "application/json":
            try:
                parsed = json.loads(body)
            except ValueError:
                raise SlackApiError("invalid_json") from None
            if not isinstance(parsed, dict):
                raise SlackApiError("json_not_object")
            parsed.pop("token", None)
            if spec.json_body:
                args.update(parsed)
        elif content_type == "application/x-www-form-urlencoded":
            try:
                args.update(parse_qsl(body.decode(), keep_blank_values=True))
            except UnicodeDecodeError:
                raise SlackApiError("invalid_charset") from None
        elif content_type == "multipart/form-data":
            form = await request.form()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            raise SlackApiError("invalid_post_type")
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        args["token"] = credentials.strip()
    return args


def _call(store: SlackStore, method: str, spec: MethodSpec, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate against the method's spec, then run its handler."""
    args = CallArgs(method, spec, raw)
    for name, error in spec.required.items():
        if args.get(name) is None:
            raise SlackApiError(error)
        if name == "token" and not hmac.compare_digest(
            str(args.get("token")).encode(), store.workspace.bot_token.encode()
        ):
            raise SlackApiError("invalid_auth")
    if spec.one_of and all(args.get(name) is None for name in spec.one_of):
        raise SlackApiError(spec.one_of_error)
    return _HANDLERS[method](store, args)
