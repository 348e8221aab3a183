"""DocuSign Connect from the sandbox: the HMAC signature, sending deliveries in order, dropping
and redelivering them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import threading
from collections.abc import Sequence

import httpx

from sandbox.docusign.models import Attempt, Delivery, DocuSignError, _now, _State

logger = logging.getLogger(__name__)


class ConnectDelivery:
    """The Connect delivery log of `DocuSignStore` (which holds the state and the lock)."""

    # Set by DocuSignStore.__init__ (as is `_save`, which persists the state).
    _state: _State
    _lock: threading.RLock
    delivery_timeout: float
    _send_lock: asyncio.Lock | None
    _send_lock_loop: asyncio.AbstractEventLoop | None
    _background: set[asyncio.Task[list[Delivery]]]

    def deliveries(
        self, *, envelope_id: str | None = None, event: str | None = None
    ) -> list[Delivery]:
        with self._lock:
            return [
                d.model_copy(deep=True)
                for d in self._state.deliveries
                if (envelope_id is None or d.envelope_id == envelope_id)
                and (event is None or d.event == event)
            ]

    def drop_next(self, count: int) -> int:
        """Drop the next `count` Connect messages instead of sending them (replaces any
        earlier count); returns the new count."""
        with self._lock:
            self._state.drop_remaining = max(0, count)
            self._save()
            return self._state.drop_remaining

    @property
    def drop_remaining(self) -> int:
        with self._lock:
            return self._state.drop_remaining

    def _ordered_send_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._send_lock is None or self._send_lock_loop is not loop:
            self._send_lock = asyncio.Lock()
            self._send_lock_loop = loop
        return self._send_lock

    async def deliver(
        self, deliveries: Sequence[Delivery], *, redelivery: bool = False
    ) -> list[Delivery]:
        """Send `deliveries` in order (after any already being sent); return them updated.

        Each message is tried once; the outcome is recorded on the delivery. A drop counter
        set by `drop_next` swallows messages here, not when they were produced, so "drop
        the next N" counts messages in the order they go out.
        """
        if not deliveries:
            return []
        async with self._ordered_send_lock():
            async with httpx.AsyncClient(trust_env=False, timeout=self.delivery_timeout) as client:
                for delivery in deliveries:
                    attempt = await self._attempt(client, delivery, redelivery=redelivery)
                    with self._lock:
                        for stored in self._state.deliveries:
                            if stored.delivery_id == delivery.delivery_id:
                                stored.attempts.append(attempt)
                                break
                        self._save()
        ids = {d.delivery_id for d in deliveries}
        with self._lock:
            by_id = {
                d.delivery_id: d.model_copy(deep=True)
                for d in self._state.deliveries
                if d.delivery_id in ids
            }
        return [by_id[d.delivery_id] for d in deliveries]

    async def _attempt(
        self, client: httpx.AsyncClient, delivery: Delivery, *, redelivery: bool
    ) -> Attempt:
        url = delivery.url or (self.connect_url if redelivery else None)
        with self._lock:
            if url is not None and not redelivery and self._state.drop_remaining > 0:
                self._state.drop_remaining -= 1
                logger.info("dropped Connect %s for %s", delivery.event, delivery.envelope_id)
                return Attempt(at=_now(), url=url, dropped=True)
        if url is None:
            return Attempt(at=_now(), url=None, error="no Connect URL configured")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "DocuSign-Connect-Sandbox/1.0",
        }
        if delivery.signature is not None:
            headers["X-DocuSign-Signature-1"] = delivery.signature
        try:
            response = await client.post(url, content=delivery.body.encode(), headers=headers)
        except httpx.HTTPError as error:
            logger.warning("Connect %s to %s failed: %s", delivery.event, url, error)
            return Attempt(at=_now(), url=url, error=f"{type(error).__name__}: {error}")
        logger.info("Connect %s -> %s: %d", delivery.event, url, response.status_code)
        return Attempt(at=_now(), url=url, status_code=response.status_code)

    def deliver_in_background(self, deliveries: Sequence[Delivery]) -> None:
        """Send after the REST response, as DocuSign does; `wait_for_deliveries` awaits it."""
        if not deliveries:
            return
        task = asyncio.get_running_loop().create_task(self.deliver(deliveries))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_for_deliveries(self) -> None:
        """Wait until every background delivery started so far has been attempted."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Send one stored message again, byte for byte (a duplicate, as Connect retries are)."""
        with self._lock:
            found = [d for d in self._state.deliveries if d.delivery_id == delivery_id]
        if not found:
            raise DocuSignError(404, "DELIVERY_NOT_FOUND", f"No Connect delivery {delivery_id}")
        (delivered,) = await self.deliver(found, redelivery=True)
        return delivered


def connect_signature(key: str, body: bytes) -> str:
    """DocuSign Connect's HMAC: base64(HMAC-SHA256(key, raw body))."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode("ascii")
