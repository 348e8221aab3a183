"""``GET /v1/tasks`` (the caller's tasks from every process) and ``POST /v1/tasks/{id}/done``.

Marking a task done is one transaction: the task row is locked, checked open (else 409), the
workflow waiting on it is told (for a LinkedIn or call step, the sequence's ``task_done``
signal, sent while the lock is held), and the row is marked done. The sequence's own
``complete_task`` activity writes the same row under the same lock and changes it only while it
is open, so whichever comes first wins and the other sees it: a task that timed out is a 409
here, and a task marked done here stays done. A reply follow-up has no workflow waiting on it
(the sequence stopped at the reply): it is marked done and the contact's history says so.

The handoff's onboarding items and renewal alerts are another source (db/tasks.py); marking
one done is ``api/handoff_tasks.py`` (the same transaction, telling the handoff).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from temporalio.service import RPCError, RPCStatusCode

from api.deps import CurrentPerson, SessionDep, TemporalDep
from api.errors import ApiError
from api.handoff_tasks import handoff_task_done
from api.list_schemas import TaskDoneRead, TaskList, TaskRead, WorkflowTold
from api.pagination import (
    CursorQuery,
    LimitQuery,
    check_choice,
    check_query_params,
    decode_cursor,
    page,
)
from db import campaigns as campaigns_db
from db import tasks as tasks_db
from db.campaign_models import RepTask
from dealflow.ids import sequence_workflow_id
from dealflow.limits import LIST_DEFAULT_LIMIT
from messages.campaign import TaskDone
from workflows.sequence import SequenceWorkflow

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

STEP_KINDS = frozenset({"linkedin_task", "call_task"})


def _read(row) -> TaskRead:  # noqa: ANN001 - a Row of TASK_COLUMNS or a RepTask
    return TaskRead(
        id=row.id,
        kind=row.kind,
        title=row.title,
        detail=row.detail,
        due_at=row.due_at,
        status=row.status,
        owner_email=row.owner_email,
        deal_id=getattr(row, "deal_id", None),
        campaign_id=row.campaign_id,
        contact_email=row.contact_email,
        step_index=row.step_index,
        created_at=row.created_at,
        done_at=row.done_at,
        done_by=row.done_by,
    )


@router.get("", response_model=TaskList)
async def list_tasks(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    status: Annotated[
        str, Query(description="open (default), done, timed_out, cancelled, or all.")
    ] = "open",
    kind: Annotated[str | None, Query(description="Only tasks of this kind.")] = None,
    limit: LimitQuery = LIST_DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> TaskList:
    """The caller's tasks from every process, soonest due first."""
    check_query_params(request, ("status", "kind", "limit", "cursor"))
    check_choice("status", status, {*tasks_db.TASK_STATUSES, "all"})
    check_choice("kind", kind, tasks_db.TASK_KINDS)
    wanted = None if status == "all" else status
    filters = {"status": status, "kind": kind, "me": person.email}
    after = decode_cursor(cursor, "tasks", filters, arity=2)
    rows = await tasks_db.list_tasks(
        session, owner_email=person.email, status=wanted, kind=kind, after=after, limit=limit
    )
    rows, next_cursor = page(rows, limit, "tasks", filters, lambda r: (r.sort_at, r.id))
    return TaskList(items=[_read(r) for r in rows], next_cursor=next_cursor)


async def _tell_sequence(temporal: TemporalDep, task: RepTask, by: str) -> WorkflowTold:
    workflow_id = sequence_workflow_id(task.campaign_id, task.contact_email)
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        await handle.signal(SequenceWorkflow.task_done, TaskDone(step_index=task.step_index, by=by))
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        # The sequence ended without closing its task (terminated by ops): nothing waits on it.
        return WorkflowTold(workflow_id=workflow_id, told=False, detail="the sequence has ended")
    return WorkflowTold(workflow_id=workflow_id, told=True, detail="task_done signal")


@router.post("/{task_id}/done", response_model=TaskDoneRead)
async def task_done(
    task_id: str, person: CurrentPerson, session: SessionDep, temporal: TemporalDep
) -> TaskDoneRead:
    """Mark one of the caller's tasks done and tell the workflow waiting on it; 409 if closed."""
    source = tasks_db.source_of(task_id)
    if source is tasks_db.HANDOFF_TASKS:  # onboarding items, renewal alerts
        return await handoff_task_done(session, temporal, person, task_id)
    task = await tasks_db.lock_campaign_task(session, task_id=task_id) if source else None
    if task is None:
        raise ApiError(404, "not_found", f"Task {task_id} does not exist.")
    if task.owner_email != person.email:
        raise ApiError(403, "forbidden", "Only the task's owner may mark it done.")
    if task.status != "open":
        raise ApiError(
            409,
            "task_closed",
            f"This task is already {task.status.replace('_', ' ')}"
            + (f" (by {task.done_by})." if task.done_by else "."),
            [
                {
                    "status": task.status,
                    "done_at": task.done_at.isoformat() if task.done_at else None,
                    "done_by": task.done_by,
                }
            ],
        )
    told = None
    if task.kind in STEP_KINDS and task.step_index is not None:
        told = await _tell_sequence(temporal, task, person.email)
    now = campaigns_db.now_utc()
    tasks_db.mark_done(task, by=person.email, at=now)
    if task.kind == "follow_up":
        await campaigns_db.append_event(
            session,
            campaign_id=task.campaign_id,
            contact_email=task.contact_email,
            event="follow_up.done",
            detail=f"follow-up task {task.id} marked done by {person.email}",
            at=now,
            idempotency_key=f"task-done/{task.id}",
        )
    await session.commit()
    return TaskDoneRead(**_read(task).model_dump(), workflow=told)
