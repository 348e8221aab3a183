"""Approvals' SQL for the API: steps, signed links, approvers and out of office.

The approval chain workflow writes the steps (``activities/approvals.py``); the API reads them to
find which chain holds a step, spends the single-use links, and marks approvers out of office.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApprovalLink, ApprovalRequest, Person


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
