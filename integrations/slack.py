"""Slack: one ``AsyncWebClient`` (bot token, API URL from Settings) and "a DM once per key".

Slack's ``chat.postMessage`` takes no idempotency key, so a message that must go out at most
once is guarded by a delivery ledger the caller keeps (a row per key in its own table): the
ledger says whether the message may have left already, takes a hand-over mark committed right
before the post, and records the outcome. A failure that proves nothing left (Slack answered an
error, the connection was refused) marks the delivery ``failed`` so a retry sends; a crash between
the post and the mark leaves ``sending``, which the next attempt records as unconfirmed and never
resends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import ClientConnectorError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from dealflow.settings import Settings

# Failures that prove Slack did not take the message: a retry may send it.
SLACK_NOT_TAKEN = (SlackApiError, ClientConnectorError)


class HandOverTaken(Exception):
    """Another attempt holds (or held) the hand-over mark of this delivery: send nothing."""


class DeliveryLedger(Protocol):
    """One delivery's row, as the caller keeps it (see ``db/approvals.py``)."""

    async def may_send(self) -> bool:
        """False if this delivery went out, or may have."""
        ...

    async def hand_over(self) -> None:
        """Mark ``sending`` (committed) or raise ``HandOverTaken``."""
        ...

    async def mark(
        self, status: str, external_ref: str | None = None, slack_channel: str | None = None
    ) -> None:
        """Record the outcome (``sent`` with Slack's ts and channel, or ``failed``)."""
        ...


class Slack:
    """The bot's Slack client: user lookups (cached), posts, updates, and the DM once per key."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client  # the raw client, for callers that post without a ledger
        self._user_ids: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Slack:
        return cls(
            AsyncWebClient(
                token=settings.secret("slack_bot_token"), base_url=settings.slack_api_url
            )
        )

    async def user_id(self, email: str) -> str:
        """The Slack user id of a person by email (looked up once per process)."""
        if email not in self._user_ids:
            resp = await self.client.users_lookupByEmail(email=email)
            self._user_ids[email] = resp["user"]["id"]
        return self._user_ids[email]

    async def update(
        self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    async def dm_once(
        self,
        ledger: DeliveryLedger,
        email: str,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        after_post: Callable[[], None] | None = None,
    ) -> bool:
        """DM ``email`` unless the ledger says it went (or may have); True if posted now.

        ``after_post`` runs between the post and the ledger's ``sent`` (crash points pin that
        moment in tests).
        """
        if not await ledger.may_send():
            return False
        channel = await self.user_id(email)
        try:
            await ledger.hand_over()  # the hand-over mark, committed right before the post
            if blocks is None:
                resp = await self.client.chat_postMessage(channel=channel, text=text)
            else:
                resp = await self.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        except HandOverTaken:
            return False
        except SLACK_NOT_TAKEN:
            await ledger.mark("failed")
            raise
        if after_post is not None:
            after_post()
        await ledger.mark("sent", resp["ts"], resp["channel"])
        return True
