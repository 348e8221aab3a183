"""Slack sandbox: the Web API methods dealflow calls, and Slack's side of interactivity.

The worker talks to Slack through `slack_sdk` exactly as in production; here its `base_url`
points at `/slack/api/` on the sandbox. The sandbox answers the way Slack's Web API does
(HTTP 200 with `{"ok": false, "error": ...}` for auth and argument errors) so the project's
error handling is exercised too.

What the sandbox implements is declared once, in `METHODS`: the verb and content types the
published spec gives each method, the arguments it requires (with the error Slack returns
when one is missing) and the optional ones it reads. The server validates requests from that
table and handlers can only read the arguments it declares, and the tests check the table
against Slack's OpenAPI description, so the sandbox cannot quietly drift from the real API.

The control API (`/_sandbox/slack/...`) plays the person in Slack: list what was posted and
click a button, which posts a `block_actions` payload to the service signed with the app's
signing secret, as Slack does. Everything is kept in memory and appended to
`<state_dir>/slack.jsonl` (an event log replayed at start), so a restart keeps it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from dealflow.settings import CONFIG_DIR, load_sandbox_file
from sandbox.files import read_jsonl, skip_unreadable
from sandbox.mail import rfc3339_utc

logger = logging.getLogger(__name__)

SLACK_LOG_FILENAME = "slack.jsonl"

# The sandbox workspace's fixed identities. They match the patterns Slack's spec gives IDs
# (T/B/A/U plus 8+ upper-case alphanumerics) so a client validating IDs accepts them.
TEAM_ID = "T0DEALFLOW1"
TEAM_DOMAIN = "dealflow-sandbox"
TEAM_NAME = "dealflow Inc."
APP_ID = "A0DEALFLOW1"
BOT_ID = "B0DEALBOT01"
BOT_USER_ID = "U0DEALBOT01"
BOT_USER_NAME = "dealflow"
# Slack still sends the deprecated verification token in every payload; apps must not rely
# on it (they verify the signature), but it is part of the documented payload.
VERIFICATION_TOKEN = "sandboxverificationtoken"  # noqa: S105 - a fixed, public payload field
# Slack shows the clicking user an error if the app does not answer within 3 seconds, and
# does not retry. The sandbox waits longer (a slow test machine is not a bug) but reports
# whether the service answered within Slack's deadline.
SLACK_ACK_DEADLINE_SECONDS = 3.0
DELIVERY_TIMEOUT_SECONDS = 10.0

_CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_CHANNEL_NAME = re.compile(r"^#?([a-z0-9][a-z0-9_-]{0,79})$")
_ALNUM = string.ascii_letters + string.digits


# --------------------------------------------------------------------------------------
# The declared surface: which Web API methods exist here and which arguments they take.


@dataclass(frozen=True)
class MethodSpec:
    """One Web API method as the sandbox implements it, in the terms of Slack's spec.

    `http` and `json_body` restate the spec (its verb, and whether it `consumes`
    application/json); `required` maps each argument the spec requires to the error Slack
    returns without it; `optional` are the spec's optional arguments the handler reads;
    `one_of` must have at least one non-empty member (Slack's "text, blocks or attachments"
    rule). `extensions` are arguments Slack accepts today that the published spec predates,
    each with the reason; the tests keep them out of the spec-checked sets.
    """

    http: Literal["GET", "POST"]
    json_body: bool
    required: Mapping[str, str]
    optional: frozenset[str] = frozenset()
    one_of: frozenset[str] = frozenset()
    one_of_error: str = ""
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def verbs(self) -> frozenset[str]:
        """The verbs accepted: the spec's, plus POST for every method, as Slack does.

        slack_sdk's sync client relies on that: it sends every method as a POST.
        """
        return frozenset({self.http, "POST"})

    @property
    def reads(self) -> frozenset[str]:
        """Every argument name a handler may read."""
        return frozenset(self.required) | self.optional | self.one_of | frozenset(self.extensions)


METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "auth.test": MethodSpec(http="GET", json_body=True, required={"token": "not_authed"}),
        "chat.postMessage": MethodSpec(
            http="POST",
            json_body=True,
            required={"token": "not_authed", "channel": "channel_not_found"},
            optional=frozenset({"text", "blocks", "thread_ts"}),
            one_of=frozenset({"text", "blocks"}),
            one_of_error="no_text",
            extensions={
                "metadata": "message metadata (2022) is newer than the published OpenAPI spec",
            },
        ),
        "chat.update": MethodSpec(
            http="POST",
            json_body=True,
            required={
                "token": "not_authed",
                "channel": "channel_not_found",
                "ts": "message_not_found",
            },
            optional=frozenset({"text", "blocks"}),
            one_of=frozenset({"text", "blocks"}),
            one_of_error="no_text",
        ),
        "users.lookupByEmail": MethodSpec(
            http="GET",
            json_body=False,
            required={"token": "not_authed", "email": "users_not_found"},
        ),
    }
)


class SlackApiError(Exception):
    """A Web API failure, answered as Slack does: HTTP 200, `{"ok": false, "error": code}`."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class CallArgs:
    """A request's arguments, readable only by the names its `MethodSpec` declares.

    Reading an undeclared name raises at once, so a handler cannot start depending on an
    argument the spec-conformance tests never looked at.
    """

    def __init__(self, method: str, spec: MethodSpec, raw: Mapping[str, Any]) -> None:
        self._method = method
        self._spec = spec
        self._raw = raw

    def get(self, name: str) -> Any:
        """The argument's value, or None when absent or empty (Slack treats both alike)."""
        if name not in self._spec.reads:
            raise KeyError(f"{self._method} reads {name!r}, which METHODS does not declare")
        value = self._raw.get(name)
        return None if value is None or value == "" else value


# --------------------------------------------------------------------------------------
# The workspace: who exists and which secrets the sandbox uses.


@dataclass(frozen=True)
class SlackUser:
    """A member of the sandbox workspace, from the org directory."""

    id: str
    email: str
    name: str
    real_name: str
    title: str
    tz: str | None


@dataclass(frozen=True)
class SlackWorkspace:
    """The sandbox workspace: its members, the bot's token and the app's signing secret.

    `interactions_url` is the app's Request URL, where button clicks are posted.
    """

    bot_token: str
    signing_secret: str
    users: tuple[SlackUser, ...]
    interactions_url: str | None = None

    @classmethod
    def load(
        cls,
        *,
        org_path: str | Path | None = None,
        bot_token: str | None = None,
        signing_secret: str | None = None,
        interactions_url: str | None = None,
    ) -> SlackWorkspace:
        """Build the workspace; secrets not given come from config/sandbox.toml."""
        if bot_token is None or signing_secret is None:
            sandbox_secrets = load_sandbox_file()["secrets"]
            bot_token = bot_token or sandbox_secrets["slack_bot_token"]
            signing_secret = signing_secret or sandbox_secrets["slack_signing_secret"]
        path = Path(org_path) if org_path is not None else CONFIG_DIR / "org.toml"
        with path.open("rb") as handle:
            org = tomllib.load(handle)
        users = tuple(
            SlackUser(
                id=person["slack_user_id"],
                email=person["email"],
                name=person["email"].split("@", 1)[0],
                real_name=person.get("name", person["email"]),
                title=person.get("title", ""),
                tz=person.get("timezone"),
            )
            for person in org.get("people", [])
            if person.get("slack_user_id")
        )
        return cls(
            bot_token=bot_token,
            signing_secret=signing_secret,
            users=users,
            interactions_url=interactions_url,
        )

    def user_by_id(self, user_id: str) -> SlackUser | None:
        return next((u for u in self.users if u.id == user_id), None)

    def user_by_email(self, email: str) -> SlackUser | None:
        wanted = email.strip().lower()
        return next((u for u in self.users if u.email.lower() == wanted), None)


def sign_request(signing_secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: `v0=` + hex HMAC-SHA256 of `v0:<timestamp>:<body>`."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------
# What the sandbox keeps.


class MessageUpdate(BaseModel):
    """One change to a message: by chat.update, or by the app through a response_url."""

    at: str
    via: Literal["chat.update", "response_url"]
    text: str
    blocks: list[dict[str, Any]]


class StoredMessage(BaseModel):
    """A message as posted, with its current content and every later change.

    `user_id`/`user_email` name the person the conversation is with (a DM, or an ephemeral
    response shown to one person); both are None for a channel message.
    """

    ts: str
    channel: str
    channel_name: str
    user_id: str | None
    user_email: str | None
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None = None
    thread_ts: str | None = None
    ephemeral: bool = False
    deleted: bool = False
    updates: list[MessageUpdate] = []
    posted_at: str


class RecordedCall(BaseModel):
    """One Web API request: the arguments (never the token) and the answer given."""

    at: str
    method: str
    http_method: str
    args: dict[str, Any]
    response: dict[str, Any]


class ResponseHook(BaseModel):
    """A response_url handed out with a click, bound to that message and user."""

    id: str
    channel: str
    ts: str
    user_id: str
    created_at: str


class Delivery(BaseModel):
    """One interaction payload posted to the service, and what came back."""

    at: str
    ts: str
    action_id: str
    user_email: str
    url: str
    payload: dict[str, Any]
    status_code: int | None
    response: Any = None
    error: str | None = None
    duration_ms: float
    within_slack_deadline: bool


class SlackStore:
    """The Slack sandbox's state: messages, Web API calls, response URLs and deliveries.

    State changes are events appended to `slack.jsonl` before they are applied, and the file
    is replayed at start, so a restart (or a crash right after a post) keeps everything,
    including the `ts` ordering and response URLs already handed to the service.
    """

    def __init__(self, path: Path, workspace: SlackWorkspace) -> None:
        self._path = path
        self._workspace = workspace
        self._lock = threading.Lock()
        self._messages: dict[str, StoredMessage] = {}
        self._calls: list[RecordedCall] = []
        self._hooks: dict[str, ResponseHook] = {}
        self._deliveries: list[Delivery] = []
        self._last_ts_us = 0
        for event in self._read_events():
            self._apply(event)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def workspace(self) -> SlackWorkspace:
        return self._workspace

    # -- the event log

    def _read_events(self) -> Iterator[dict[str, Any]]:
        for number, line in read_jsonl(self._path):
            try:
                event = json.loads(line)
            except ValueError:
                skip_unreadable(self._path, number)
                continue
            if isinstance(event, dict):
                yield event

    def _commit(self, event: dict[str, Any]) -> None:
        """Persist, then apply; the caller holds the lock."""
        with self._path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        try:
            kind = event.get("kind")
            if kind == "post":
                message = StoredMessage.model_validate(event["message"])
                self._messages[message.ts] = message
                self._last_ts_us = max(self._last_ts_us, _ts_to_us(message.ts))
            elif kind == "update":
                message = self._messages[event["ts"]]
                update = MessageUpdate.model_validate(event["update"])
                message.text, message.blocks = update.text, update.blocks
                message.updates.append(update)
            elif kind == "delete":
                self._messages[event["ts"]].deleted = True
            elif kind == "call":
                self._calls.append(RecordedCall.model_validate(event["call"]))
            elif kind == "hook":
                hook = ResponseHook.model_validate(event["hook"])
                self._hooks[hook.id] = hook
            elif kind == "delivery":
                self._deliveries.append(Delivery.model_validate(event["delivery"]))
        except (KeyError, ValidationError):
            logger.warning("skipping an inconsistent %s event in %s", event.get("kind"), self._path)

    def _next_ts(self) -> str:
        """A new message ts: Slack's `<seconds>.<microseconds>`, strictly increasing."""
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 1)
        return _us_to_ts(self._last_ts_us)

    # -- reads

    def messages(
        self, *, channel: str | None = None, user_email: str | None = None
    ) -> list[StoredMessage]:
        """Messages oldest first; `user_email` matches the person a DM is with."""
        with self._lock:
            selected = [m.model_copy(deep=True) for m in self._messages.values()]
        if channel is not None:
            selected = [m for m in selected if channel in (m.channel, m.channel_name)]
        if user_email is not None:
            wanted = user_email.strip().lower()
            selected = [m for m in selected if (m.user_email or "").lower() == wanted]
        return sorted(selected, key=lambda m: _ts_to_us(m.ts))

    def message(self, ts: str) -> StoredMessage | None:
        with self._lock:
            found = self._messages.get(ts)
            return found.model_copy(deep=True) if found is not None else None

    def calls(self, *, method: str | None = None) -> list[RecordedCall]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def hook(self, hook_id: str) -> ResponseHook | None:
        with self._lock:
            return self._hooks.get(hook_id)

    # -- writes

    def record_call(
        self, method: str, http_method: str, args: dict[str, Any], response: dict[str, Any]
    ) -> None:
        call = RecordedCall(
            at=_now(), method=method, http_method=http_method, args=args, response=response
        )
        with self._lock:
            self._commit({"kind": "call", "call": call.model_dump(mode="json")})

    def post(
        self,
        *,
        channel: str,
        channel_name: str,
        user: SlackUser | None,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
        thread_ts: str | None = None,
        ephemeral: bool = False,
    ) -> StoredMessage:
        with self._lock:
            message = StoredMessage(
                ts=self._next_ts(),
                channel=channel,
                channel_name=channel_name,
                user_id=user.id if user else None,
                user_email=user.email if user else None,
                text=text,
                blocks=blocks,
                metadata=metadata,
                thread_ts=thread_ts,
                ephemeral=ephemeral,
                posted_at=_now(),
            )
            self._commit({"kind": "post", "message": message.model_dump(mode="json")})
            return message.model_copy(deep=True)

    def update(
        self,
        ts: str,
        *,
        text: str | None,
        blocks: list[dict[str, Any]] | None,
        via: Literal["chat.update", "response_url"],
    ) -> StoredMessage | None:
        """Change a live message; a None field keeps its current value, as Slack does."""
        with self._lock:
            message = self._messages.get(ts)
            if message is None or message.deleted:
                return None
            update = MessageUpdate(
                at=_now(),
                via=via,
                text=message.text if text is None else text,
                blocks=message.blocks if blocks is None else blocks,
            )
            self._commit({"kind": "update", "ts": ts, "update": update.model_dump(mode="json")})
            return self._messages[ts].model_copy(deep=True)

    def delete(self, ts: str) -> bool:
        with self._lock:
            message = self._messages.get(ts)
            if message is None or message.deleted:
                return False
            self._commit({"kind": "delete", "ts": ts, "at": _now()})
            return True

    def open_hook(self, *, channel: str, ts: str, user_id: str) -> ResponseHook:
        hook = ResponseHook(
            id=secrets.token_urlsafe(18), channel=channel, ts=ts, user_id=user_id, created_at=_now()
        )
        with self._lock:
            self._commit({"kind": "hook", "hook": hook.model_dump(mode="json")})
        return hook

    def record_delivery(self, delivery: Delivery) -> None:
        with self._lock:
            self._commit({"kind": "delivery", "delivery": delivery.model_dump(mode="json")})

    def clear(self) -> int:
        """Forget everything (memory and file); returns how many messages were dropped."""
        with self._lock:
            count = len(self._messages)
            self._path.write_bytes(b"")
            self._messages.clear()
            self._calls.clear()
            self._hooks.clear()
            self._deliveries.clear()
            return count


def _now() -> str:
    return rfc3339_utc(datetime.now(UTC))


def _us_to_ts(microseconds: int) -> str:
    return f"{microseconds // 1_000_000}.{microseconds % 1_000_000:06d}"


def _ts_to_us(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


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
        try:
            reply, duration_ms = await deliver_interaction(
                workspace.interactions_url, workspace.signing_secret, payload
            )
        except httpx.HTTPError as failure:
            duration_ms = (time.perf_counter() - started) * 1000
            store.record_delivery(
                Delivery(
                    at=_now(),
                    ts=ts,
                    action_id=action_id,
                    user_email=user.email,
                    url=workspace.interactions_url,
                    payload=payload,
                    status_code=None,
                    error=f"{type(failure).__name__}: {failure}",
                    duration_ms=duration_ms,
                    within_slack_deadline=False,
                )
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
        store.record_delivery(
            Delivery(
                at=_now(),
                ts=ts,
                action_id=action_id,
                user_email=user.email,
                url=workspace.interactions_url,
                payload=payload,
                status_code=reply.status_code,
                response=answer,
                duration_ms=duration_ms,
                within_slack_deadline=within,
            )
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
