"""The append-only, hash-chained audit trail."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import AuditEvent

GENESIS_HASH = "0" * 64
# One chain for the whole table: writers take this transaction-scoped advisory lock so two
# appends never read the same previous hash.
_CHAIN_LOCK_ID = 7_114_201


def event_hash(
    *,
    prev_hash: str,
    at: dt.datetime,
    deal_id: str | None,
    actor: str,
    channel: str,
    event: str,
    detail: dict[str, Any],
) -> str:
    canonical = json.dumps(
        {
            "prev": prev_hash,
            "at": at.astimezone(dt.UTC).isoformat(),
            "deal_id": deal_id,
            "actor": actor,
            "channel": channel,
            "event": event,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append_audit(
    session: AsyncSession,
    *,
    deal_id: str | None,
    actor: str,
    channel: str,
    event: str,
    detail: dict[str, Any] | None = None,
    at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> AuditEvent:
    """Append one event (or return the one already written under ``idempotency_key``)."""
    if idempotency_key is not None:
        existing = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.idempotency_key == idempotency_key)
            )
        ).scalar_one_or_none()
        if existing is not None:
            return existing
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CHAIN_LOCK_ID})
    prev = (
        await session.execute(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    ).scalar_one_or_none() or GENESIS_HASH
    at = at or dt.datetime.now(dt.UTC)
    detail = json.loads(json.dumps(detail or {}, default=str))
    row = AuditEvent(
        at=at,
        deal_id=deal_id,
        actor=actor,
        channel=channel,
        event=event,
        detail=detail,
        idempotency_key=idempotency_key,
        prev_hash=prev,
        hash=event_hash(
            prev_hash=prev,
            at=at,
            deal_id=deal_id,
            actor=actor,
            channel=channel,
            event=event,
            detail=detail,
        ),
    )
    session.add(row)
    await session.flush()
    return row


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


async def verify_chain(session: AsyncSession) -> ChainCheck:
    """Recompute every hash from the start; report the first row that does not match."""
    prev = GENESIS_HASH
    checked = 0
    rows = await session.stream_scalars(select(AuditEvent).order_by(AuditEvent.id))
    async for row in rows:
        if row.prev_hash != prev:
            return ChainCheck(False, checked, row.id, "previous hash does not match")
        expected = event_hash(
            prev_hash=row.prev_hash,
            at=row.at,
            deal_id=row.deal_id,
            actor=row.actor,
            channel=row.channel,
            event=row.event,
            detail=row.detail,
        )
        if expected != row.hash:
            return ChainCheck(False, checked, row.id, "content does not match its hash")
        prev = row.hash
        checked += 1
    return ChainCheck(True, checked)


async def deal_events(session: AsyncSession, *, deal_id: str) -> list[AuditEvent]:
    """Every audit event of one deal, oldest first (the chain order)."""
    events = await session.scalars(
        select(AuditEvent).where(AuditEvent.deal_id == deal_id).order_by(AuditEvent.id)
    )
    return list(events.all())
