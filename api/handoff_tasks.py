"""A handoff task marked done (``POST /v1/tasks/{id}/done`` and
``POST /v1/handoffs/{deal}/items/{item}/done``): one transaction, like the campaign tasks'.

The task row is locked and checked open (else 409 ``task_closed``); an onboarding item's
handoff is told (``item_done``, which stops its reminder and escalation) while the lock is
held; the row is marked done and the audit trail says who. The CS lead's "assign a CSM" task
is closed by ``POST /v1/handoffs/{deal}/reassign`` instead (409 ``use_reassign``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.errors import ApiError
from api.handoff import tell_item_done
from api.handoff_schemas import HandoffItemRead
from api.list_schemas import TaskDoneRead, TaskRead, WorkflowTold
from db import handoff as handoff_db
from db.audit import append_audit
from db.handoff_models import HandoffTask
from db.models import Person


def item_read(task: HandoffTask) -> HandoffItemRead:
    return HandoffItemRead.model_validate(task, from_attributes=True)


def closed_conflict(task: HandoffTask) -> ApiError:
    """409 ``task_closed``: the task is no longer open (done or cancelled)."""
    return ApiError(
        409,
        "task_closed",
        f"This item is already {task.status}" + (f" (by {task.done_by})." if task.done_by else "."),
        [{"status": task.status, "done_at": task.done_at.isoformat() if task.done_at else None}],
    )


async def complete_task(
    session: AsyncSession, temporal: Client, person: Person, task: HandoffTask
) -> WorkflowTold | None:
    """Mark a locked, open handoff task done (the caller checked it); tell the handoff."""
    if task.kind == handoff_db.CSM_ASSIGNMENT:
        raise ApiError(
            409,
            "use_reassign",
            "Assign the CSM with POST /v1/handoffs/{deal}/reassign; the task closes with it.",
        )
    now = dt.datetime.now(dt.UTC)
    told = None
    if task.kind == "onboarding_item":
        told = await tell_item_done(temporal, task.id, task.deal_id, person.email, now)
    task.status, task.done_at, task.done_by = "done", now, person.email
    await append_audit(
        session,
        deal_id=task.deal_id,
        actor=person.email,
        channel="api",
        event=f"handoff.{task.kind}.done",
        detail={"task_id": task.id, "title": task.title},
        idempotency_key=f"handoff-task-done/{task.id}",
    )
    return told


async def handoff_task_done(
    session: AsyncSession, temporal: Client, person: Person, task_id: str
) -> TaskDoneRead:
    """``POST /v1/tasks/{id}/done`` for a handoff task (the task's owner)."""
    task = await handoff_db.lock_task(session, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"Task {task_id} does not exist.")
    if task.owner_email != person.email:
        raise ApiError(403, "forbidden", "Only the task's owner may mark it done.")
    if task.status != "open":
        raise closed_conflict(task)
    told = await complete_task(session, temporal, person, task)
    await session.commit()
    read = TaskRead.model_validate(task, from_attributes=True)  # no campaign fields: None
    return TaskDoneRead(**read.model_dump(), workflow=told)
