"""Approvals' SQL: steps, signed links, approvers and out of office; the deliveries ledger.

The approval chain workflow writes the steps (``activities/approvals.py``); the API reads them to
find which chain holds a step, spends the single-use links, and marks approvers out of office.
The deliveries (``approval_deliveries``) make each message go out at most once.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.audit import append_audit
from db.models import ApprovalDelivery, ApprovalLink, ApprovalRequest, Person
from dealflow.ids import deal_of_approval_step
from messages.approval import ApprovalStep

log = logging.getLogger(__name__)


async def get_step(session: AsyncSession, *, step_id: str) -> ApprovalRequest | None:
    """One approval step (request) by its id, e.g. ``deal_….v1.s1.finance_director``."""
    return await session.get(ApprovalRequest, step_id)


async def get_link(session: AsyncSession, *, token_id: str) -> ApprovalLink | None:
    """The signed link row a token names (its use, revocation and expiry are on it)."""
    return await session.get(ApprovalLink, token_id)


async def spend_link(session: AsyncSession, *, token_id: str, at: dt.datetime) -> bool:
    """Mark the link used, atomically: of two racing submissions only one gets True."""
    spent = await session.execute(
        update(ApprovalLink)
        .where(ApprovalLink.token_id == token_id, ApprovalLink.used_at.is_(None))
        .values(used_at=at)
        .returning(ApprovalLink.token_id)
    )
    return spent.first() is not None


async def give_link_back(session: AsyncSession, *, token_id: str) -> None:
    """Undo ``spend_link`` (the decision could not reach the workflow): usable again."""
    await session.execute(
        update(ApprovalLink).where(ApprovalLink.token_id == token_id).values(used_at=None)
    )


async def person_by_slack_user(session: AsyncSession, *, slack_user_id: str) -> Person | None:
    """The person whose directory entry names this Slack user id."""
    return await session.scalar(select(Person).where(Person.slack_user_id == slack_user_id))


def set_out_of_office(approver: Person, *, until: dt.datetime, delegate_email: str) -> None:
    """Record the approver's absence and delegate on their row (flushed with the session)."""
    approver.ooo_until, approver.ooo_delegate_email = until, delegate_email


async def pending_steps_held_by(session: AsyncSession, *, email: str) -> list[tuple[str, str]]:
    """(step id, workflow id) of every pending step this person holds."""
    rows = await session.execute(
        select(ApprovalRequest.step_id, ApprovalRequest.workflow_id).where(
            ApprovalRequest.holder_email == email, ApprovalRequest.status == "pending"
        )
    )
    return [(step_id, workflow_id) for step_id, workflow_id in rows.all()]


# --- deliveries: at most once per (step, recipient, channel, purpose) ---------------------------

# Delivery row states in which a message may already have left: never hand it over again.
SETTLED = ("sending", "sent", "unconfirmed")


async def delivery_may_send(
    session: AsyncSession, *, step_id: str, recipient: str, channel: str, purpose: str
) -> bool:
    """False if this delivery went out, or may have: a ``sending`` row left by an attempt
    that died mid-hand-over is recorded ``unconfirmed`` (and audited) here, never resent."""
    row = (
        await session.execute(
            select(ApprovalDelivery)
            .where(
                ApprovalDelivery.step_id == step_id,
                ApprovalDelivery.recipient_email == recipient,
                ApprovalDelivery.channel == channel,
                ApprovalDelivery.purpose == purpose,
            )
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None or row.status not in SETTLED:
        return True
    if row.status == "sending":
        row.status = "unconfirmed"
        log.warning(
            "%s delivery %s/%s left mid-hand-over: recorded unconfirmed, not resent",
            channel,
            step_id,
            purpose,
        )
        await append_audit(
            session,
            deal_id=deal_of_approval_step(step_id),
            actor="workflow",
            channel=channel,
            event="approval.delivery_unconfirmed"
            if purpose != "notify"
            else "notification.unconfirmed",
            detail={
                "step_id": step_id,
                "to": recipient,
                "purpose": purpose,
                "ref": row.external_ref,
            },
            idempotency_key=f"{step_id}/{recipient}/{channel}/{purpose}/unconfirmed",
        )
    return False


async def take_hand_over(
    session: AsyncSession,
    *,
    step_id: str,
    recipient: str,
    channel: str,
    purpose: str,
    external_ref: str | None = None,
) -> bool:
    """The hand-over mark: ``sending``, unless an attempt took it already (then False: whoever
    holds it sent, or may have). The caller commits at once."""
    stmt = insert(ApprovalDelivery).values(
        step_id=step_id,
        recipient_email=recipient,
        channel=channel,
        purpose=purpose,
        status="sending",
        external_ref=external_ref,
    )
    taken = await session.scalar(
        stmt.on_conflict_do_update(
            index_elements=["step_id", "recipient_email", "channel", "purpose"],
            set_={"status": "sending", "external_ref": external_ref},
            where=ApprovalDelivery.status.not_in(SETTLED),
        ).returning(ApprovalDelivery.id)
    )
    return taken is not None


async def mark_delivery(
    session: AsyncSession,
    *,
    step_id: str,
    recipient: str,
    channel: str,
    purpose: str,
    status: str,
    external_ref: str | None = None,
    slack_channel: str | None = None,
) -> None:
    """Record the delivery's outcome; ``sent`` is audited (``approval.delivered``)."""
    values = {
        "status": status,
        "external_ref": external_ref,
        "slack_channel": slack_channel,
    }
    stmt = insert(ApprovalDelivery).values(
        step_id=step_id,
        recipient_email=recipient,
        channel=channel,
        purpose=purpose,
        **values,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["step_id", "recipient_email", "channel", "purpose"],
            set_=values,
        )
    )
    if status == "sent":
        await append_audit(
            session,
            deal_id=deal_of_approval_step(step_id),
            actor="workflow",
            channel=channel,
            event="approval.delivered" if purpose != "notify" else "notification.sent",
            detail={
                "step_id": step_id,
                "to": recipient,
                "purpose": purpose,
                "ref": external_ref,
            },
            idempotency_key=f"{step_id}/{recipient}/{channel}/{purpose}/sent",
        )


async def sent_slack_messages(session: AsyncSession, *, step_id: str) -> list[tuple[str, str]]:
    """(channel, ts) of every Slack message sent about this step."""
    rows = await session.execute(
        select(ApprovalDelivery.slack_channel, ApprovalDelivery.external_ref).where(
            ApprovalDelivery.step_id == step_id,
            ApprovalDelivery.channel == "slack",
            ApprovalDelivery.status == "sent",
        )
    )
    return [(channel, ts) for channel, ts in rows.all()]


# --- requests: the chain's steps as rows -------------------------------------------------------


async def decision_times(
    session: AsyncSession, *, emails: list[str]
) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(decided by, requested at, decided at) of every past decision of these people."""
    rows = await session.execute(
        select(
            ApprovalRequest.decided_by,
            ApprovalRequest.requested_at,
            ApprovalRequest.decided_at,
        ).where(
            ApprovalRequest.decided_by.in_(emails),
            ApprovalRequest.decided_at.is_not(None),
        )
    )
    return [(who, requested, decided) for who, requested, decided in rows.all()]


async def insert_request(
    session: AsyncSession, *, deal_id: str, quote_version: int, workflow_id: str, step: ApprovalStep
) -> None:
    """The request row of a step, pending (once: a second insert does nothing)."""
    stmt = insert(ApprovalRequest).values(
        step_id=step.step_id,
        deal_id=deal_id,
        quote_version=quote_version,
        workflow_id=workflow_id,
        stage=step.stage,
        role=step.role,
        approver_email=step.approver_email,
        holder_email=step.holder_email,
        delegate_email=step.delegate_email,
        reason=step.reason,
        inputs_sha256=step.inputs_sha256,
        status="pending",
        requested_at=step.requested_at,
        due_at=step.due_at,
        escalation_level=0,
    )
    await session.execute(stmt.on_conflict_do_nothing())


async def mirror_request(session: AsyncSession, *, step: ApprovalStep) -> None:
    """A reminder, escalation or delegation: who holds the step now, and its timers."""
    await session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.step_id == step.step_id)
        .values(
            holder_email=step.holder_email,
            delegate_email=step.delegate_email,
            due_at=step.due_at,
            reminded_at=step.reminded_at,
            escalated_to=step.escalated_to,
            escalation_level=step.escalation_level,
        )
    )


async def record_decision(session: AsyncSession, *, step: ApprovalStep) -> None:
    """The decision on the step's row."""
    await session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.step_id == step.step_id)
        .values(
            status=step.status,
            decided_by=step.decided_by,
            decision=step.decision,
            comment=step.comment,
            decided_at=step.decided_at,
            channel=step.channel,
        )
    )


async def withdraw_pending(session: AsyncSession, *, step_id: str, reason: str) -> None:
    """Withdraw the step if it is still pending (a decided step keeps its decision)."""
    await session.execute(
        update(ApprovalRequest)
        .where(ApprovalRequest.step_id == step_id, ApprovalRequest.status == "pending")
        .values(status="withdrawn", comment=reason)
    )


async def revoke_links(session: AsyncSession, *, step_id: str, at: dt.datetime) -> None:
    """Every signed link of the step dies (decided or withdrawn)."""
    await session.execute(
        update(ApprovalLink)
        .where(ApprovalLink.step_id == step_id, ApprovalLink.revoked_at.is_(None))
        .values(revoked_at=at)
    )


async def link_expiry(
    session: AsyncSession,
    *,
    token_id: str,
    step_id: str,
    recipient: str,
    expires: dt.datetime,
) -> dt.datetime:
    """The link row of this token, created with ``expires`` if new; its expiry either way."""
    row = await session.get(ApprovalLink, token_id)
    if row is None:
        row = ApprovalLink(
            token_id=token_id, step_id=step_id, approver_email=recipient, expires_at=expires
        )
        session.add(row)
        await session.flush()
    return row.expires_at
