"""Handoff data access: details, the mirror row, tasks (a ``TaskSource``), deliveries, learning."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, Select, String, cast, func, literal, null, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.handoff_models import Handoff, HandoffDelivery, HandoffDetails, HandoffTask, LearningEvent
from db.models import AuditEvent, Deal, Person, QuoteVersion
from dealflow.ids import handoff_task_id

OPEN_STATUSES = ("collecting", "needs_attention", "kickoff_scheduled", "onboarding")

# The CS lead's task when no CSM fits: one per deal, closed when a CSM is assigned.
CSM_ASSIGNMENT = "csm_assignment"
_CSM_ASSIGNMENT_KEY = "csm"


# --- the tasks source (db/tasks.py) ---------------------------------------------------------


def handoff_sort_at() -> Any:
    return func.coalesce(HandoffTask.due_at, HandoffTask.created_at)


def handoff_tasks_select() -> Select:
    t = HandoffTask
    return select(
        t.id,
        literal("handoff").label("source"),
        t.kind,
        t.title,
        t.detail,
        t.due_at,
        handoff_sort_at().label("sort_at"),
        t.status,
        t.owner_email,
        t.deal_id,
        # Typed NULLs: the UNION with the campaign tasks needs matching column types.
        cast(null(), String).label("campaign_id"),
        cast(null(), String).label("contact_email"),
        cast(null(), Integer).label("step_index"),
        t.created_at,
        t.done_at,
        t.done_by,
    )


# --- details ----------------------------------------------------------------------------------


async def get_details(session: AsyncSession, deal_id: str) -> HandoffDetails | None:
    return await session.get(HandoffDetails, deal_id)


async def save_details(
    session: AsyncSession, deal_id: str, *, changes: dict[str, Any], by: str
) -> HandoffDetails:
    row = await session.get(HandoffDetails, deal_id, with_for_update=True)
    if row is None:
        row = HandoffDetails(deal_id=deal_id, contacts=[], success_goals=[], revision=0)
        session.add(row)
    for name in ("contacts", "success_goals", "timezone", "notes"):
        if name in changes:
            setattr(row, name, changes[name])
    row.revision = (row.revision or 0) + 1
    row.updated_by = by
    row.updated_at = dt.datetime.now(dt.UTC)
    await session.flush()
    return row


# --- the mirror row ---------------------------------------------------------------------------


async def upsert_handoff(session: AsyncSession, deal_id: str, **values: Any) -> None:
    values["updated_at"] = dt.datetime.now(dt.UTC)
    stmt = insert(Handoff).values(deal_id=deal_id, **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=[Handoff.deal_id], set_=values))


async def open_handoffs_by_csm(session: AsyncSession, *, except_deal: str) -> dict[str, int]:
    rows = await session.execute(
        select(Handoff.csm_email, func.count())
        .where(
            Handoff.csm_email.is_not(None),
            Handoff.status.in_(OPEN_STATUSES),
            Handoff.deal_id != except_deal,
        )
        .group_by(Handoff.csm_email)
    )
    return {email: n for email, n in rows.all()}


async def get_handoff(session: AsyncSession, deal_id: str) -> Handoff | None:
    return await session.get(Handoff, deal_id)


async def deal_summary(session: AsyncSession, deal_id: str) -> dict[str, Any] | None:
    """The ``handoff`` object of ``GET /v1/deals/{id}``; None before closed-won."""
    row = await session.get(Handoff, deal_id)
    if row is None:
        return None
    return {
        "status": row.status,
        "csm_email": row.csm_email,
        "kickoff_at": row.kickoff_at.isoformat() if row.kickoff_at else None,
        "renewal_at": row.renewal_at.isoformat() if row.renewal_at else None,
    }


# --- tasks ------------------------------------------------------------------------------------


async def ensure_task(session: AsyncSession, **values: Any) -> HandoffTask:
    """Create the task once per (deal, kind, key); a second call returns the first row."""
    tid = handoff_task_id(values["deal_id"], values["kind"], values["item_key"])
    stmt = insert(HandoffTask).values(id=tid, status="open", **values)
    await session.execute(stmt.on_conflict_do_nothing(index_elements=[HandoffTask.id]))
    row = await session.get(HandoffTask, tid)
    assert row is not None
    return row


async def lock_task(session: AsyncSession, tid: str) -> HandoffTask | None:
    return await session.get(HandoffTask, tid, with_for_update=True)


async def record_task_progress(
    session: AsyncSession,
    tid: str,
    *,
    reminded_at: dt.datetime | None,
    escalated_to: str | None,
    status: str | None,
) -> None:
    """What the workflow did about a task (reminded, escalated, overdue): the first reminder
    time is kept, and the status changes only while the task is open."""
    row = await lock_task(session, tid)
    if row is None:
        return
    if reminded_at is not None and row.reminded_at is None:
        row.reminded_at = reminded_at
    if escalated_to is not None:
        row.escalated_to = escalated_to
    if status is not None and row.status == "open":
        row.status = status


async def ensure_csm_assignment_task(
    session: AsyncSession, *, deal_id: str, customer: str, why: str, lead: str | None
) -> HandoffTask:
    """The CS lead's "assign a CSM" task, once per deal."""
    return await ensure_task(
        session,
        deal_id=deal_id,
        kind=CSM_ASSIGNMENT,
        item_key=_CSM_ASSIGNMENT_KEY,
        title=f"Assign a CSM to {customer}",
        detail=why,
        owner_email=lead,
        due_at=None,
    )


async def close_csm_assignment_task(session: AsyncSession, deal_id: str, by: str | None) -> None:
    """A CSM was assigned: the lead's task, if open, is done."""
    task = await lock_task(session, handoff_task_id(deal_id, CSM_ASSIGNMENT, _CSM_ASSIGNMENT_KEY))
    if task is not None and task.status == "open":
        task.status, task.done_at, task.done_by = "done", dt.datetime.now(dt.UTC), by


async def move_open_tasks(
    session: AsyncSession, *, deal_id: str, from_email: str, to_email: str
) -> list[str]:
    """Every open task of the deal owned by ``from_email`` goes to ``to_email``: their ids."""
    rows = (
        await session.execute(
            select(HandoffTask)
            .where(
                HandoffTask.deal_id == deal_id,
                HandoffTask.owner_email == from_email,
                HandoffTask.status == "open",
            )
            .with_for_update()
        )
    ).scalars()
    moved = []
    for row in rows:
        row.owner_email = to_email
        moved.append(row.id)
    return moved


async def cancel_open_tasks(session: AsyncSession, *, deal_id: str, reason: str) -> list[str]:
    """Every open task of the deal becomes ``cancelled``, the reason in its detail: their ids."""
    rows = (
        await session.execute(
            select(HandoffTask)
            .where(HandoffTask.deal_id == deal_id, HandoffTask.status == "open")
            .with_for_update()
        )
    ).scalars()
    closed = []
    for row in rows:
        row.status = "cancelled"
        row.detail = f"{row.detail or ''} (cancelled: {reason})".strip()[:2000]
        closed.append(row.id)
    return closed


# --- the people: CSMs and managers ------------------------------------------------------------


async def csms(session: AsyncSession) -> list[Person]:
    """Everyone with the ``csm`` role (the matching pool and the reassignment check)."""
    return list(
        (await session.execute(select(Person).where(Person.roles.contains(["csm"])))).scalars()
    )


async def managers(session: AsyncSession) -> dict[str, str | None]:
    """Each person's manager (an onboarding item's escalation goes to its owner's)."""
    return {p.email: p.manager_email for p in (await session.execute(select(Person))).scalars()}


# --- deliveries -------------------------------------------------------------------------------


async def delivery_sent(session: AsyncSession, key: str) -> HandoffDelivery | None:
    row = await session.get(HandoffDelivery, key)
    return row if row is not None and row.status == "sent" else None


# Delivery states in which the message may have left already: never hand it over again.
HANDED_OVER = ("sending", "sent", "unconfirmed")


async def settle_delivery(session: AsyncSession, key: str) -> str | None:
    """The delivery's state for a new attempt (locked): a ``sending`` row, left by an attempt
    that died mid-hand-over, becomes ``unconfirmed`` here (the message may have left)."""
    row = await session.get(HandoffDelivery, key, with_for_update=True)
    if row is None:
        return None
    if row.status == "sending":
        row.status = "unconfirmed"
    return row.status


async def hand_over_delivery(
    session: AsyncSession, key: str, *, deal_id: str, channel: str, recipient: str
) -> bool:
    """The hand-over mark (``sending``), unless an attempt took it already: True if taken now."""
    values = {"deal_id": deal_id, "channel": channel, "recipient": recipient, "status": "sending"}
    stmt = insert(HandoffDelivery).values(key=key, **values)
    taken = await session.scalar(
        stmt.on_conflict_do_update(
            index_elements=[HandoffDelivery.key],
            set_=values,
            where=HandoffDelivery.status.not_in(HANDED_OVER),
        ).returning(HandoffDelivery.key)
    )
    return taken is not None


async def mark_delivery(
    session: AsyncSession,
    key: str,
    *,
    deal_id: str,
    channel: str,
    recipient: str,
    status: str,
    ref: str | None = None,
) -> None:
    values = {
        "deal_id": deal_id,
        "channel": channel,
        "recipient": recipient,
        "status": status,
        "ref": ref,
        "sent_at": dt.datetime.now(dt.UTC) if status == "sent" else None,
    }
    stmt = insert(HandoffDelivery).values(key=key, **values)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[HandoffDelivery.key], set_=values)
    )


# --- learning ---------------------------------------------------------------------------------


def _hours(a: dt.datetime | None, b: dt.datetime | None) -> Decimal | None:
    if a is None or b is None:
        return None
    return (Decimal((b - a).total_seconds()) / Decimal(3600)).quantize(Decimal("0.01"))


async def learning_facts(session: AsyncSession, deal: Deal, at: dt.datetime) -> dict[str, Any]:
    """Cycle time, the latest quote and the approval and signature durations, from the audit
    trail's stage events (first entry into a stage to first entry into the next)."""
    qv = await session.scalar(
        select(QuoteVersion)
        .where(QuoteVersion.deal_id == deal.id)
        .order_by(QuoteVersion.version.desc())
        .limit(1)
    )
    rows = await session.execute(
        select(AuditEvent.event, func.min(AuditEvent.at))
        .where(AuditEvent.deal_id == deal.id, AuditEvent.event.like("stage.%"))
        .group_by(AuditEvent.event)
    )
    first = {event.removeprefix("stage."): when for event, when in rows.all()}
    return {
        "cycle_days": (Decimal((at - deal.created_at).total_seconds()) / Decimal(86400)).quantize(
            Decimal("0.01")
        ),
        "total": qv.total if qv else None,
        "currency": qv.currency if qv else deal.currency,
        "discount_pct": deal.discount_pct,
        "approval_hours": _hours(first.get("awaiting_approval"), first.get("awaiting_signature")),
        "signature_hours": _hours(
            first.get("awaiting_signature"), first.get("closing") or first.get("closed_won")
        ),
    }


async def record_learning(
    session: AsyncSession,
    deal: Deal,
    *,
    kind: str,
    at: dt.datetime,
    reason: str | None = None,
    competitor: str | None = None,
    notes: str | None = None,
) -> bool:
    """One event per deal: a second call (a retry, a second lost) changes nothing."""
    facts = await learning_facts(session, deal, at)
    stmt = insert(LearningEvent).values(
        deal_id=deal.id,
        kind=kind,
        at=at,
        reason=reason,
        competitor=competitor or deal.competitor,
        notes=notes,
        **facts,
    )
    result = await session.execute(
        stmt.on_conflict_do_nothing(index_elements=[LearningEvent.deal_id])
    )
    return bool(result.rowcount)


async def list_learning(
    session: AsyncSession, *, kind: str | None, since: dt.datetime | None, limit: int
) -> list[LearningEvent]:
    stmt = select(LearningEvent)
    if kind:
        stmt = stmt.where(LearningEvent.kind == kind)
    if since:
        stmt = stmt.where(LearningEvent.at >= since)
    stmt = stmt.order_by(LearningEvent.at.desc(), LearningEvent.deal_id).limit(limit)
    return list((await session.execute(stmt)).scalars())
