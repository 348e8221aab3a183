"""What the Slack sandbox keeps: messages, calls, response hooks and interaction deliveries, in
memory and in an append-only event log replayed at start."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sandbox.files import read_jsonl, skip_unreadable
from sandbox.mail import rfc3339_utc
from sandbox.slack.workspace import SlackUser, SlackWorkspace

logger = logging.getLogger(__name__)


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
