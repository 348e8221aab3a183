"""One list over every kind of task the processes create for a person.

Each process keeps its tasks in its own table; a ``TaskSource`` maps one table onto the common
row (``TASK_COLUMNS``) and says which ids are its own. ``GET /v1/tasks`` is a UNION ALL of every
registered source, each branch already filtered by owner, status and the keyset position and
cut at ``limit + 1`` (so each branch is one range scan of its own index), merged and cut again.

Sources: the campaign side's ``campaign_tasks`` (reply follow-ups, LinkedIn and call steps) and
the handoff's ``handoff_tasks`` (onboarding items, renewal alerts, the CS lead's "assign a CSM";
``deal_id`` set, ids prefixed ``dealflow.ids.HANDOFF_TASK_PREFIX``), whose completion is
``api/handoff_tasks.py``. Another process adds one ``TaskSource`` to ``SOURCES``.

Order: soonest due first; a task without a due time (a reply to follow up) is due from the
moment it was created, so the sort key is ``coalesce(due_at, created_at)``, then the id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, and_, func, literal, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from db.campaign_models import RepTask
from db.handoff import CSM_ASSIGNMENT, handoff_sort_at, handoff_tasks_select
from dealflow.ids import HANDOFF_TASK_PREFIX

# Every source yields exactly these columns, in this order.
TASK_COLUMNS = (
    "id",
    "source",
    "kind",
    "title",
    "detail",
    "due_at",
    "sort_at",
    "status",
    "owner_email",
    "deal_id",
    "campaign_id",
    "contact_email",
    "step_index",
    "created_at",
    "done_at",
    "done_by",
)


@dataclass(frozen=True)
class TaskSource:
    name: str
    kinds: frozenset[str]
    statuses: frozenset[str]
    id_prefix: str
    select: Callable[[], Select]
    sort_at: Callable[[], Any]  # the sort-key expression, so the keyset filter uses the index


def _campaign_sort_at() -> Any:
    return func.coalesce(RepTask.due_at, RepTask.created_at)


def _campaign_tasks() -> Select:
    t = RepTask
    return select(
        t.id,
        literal("campaign").label("source"),
        t.kind,
        t.title,
        t.detail,
        t.due_at,
        _campaign_sort_at().label("sort_at"),
        t.status,
        t.owner_email,
        null().label("deal_id"),
        t.campaign_id,
        t.contact_email,
        t.step_index,
        t.created_at,
        t.done_at,
        t.done_by,
    )


CAMPAIGN_TASKS = TaskSource(
    name="campaign",
    kinds=frozenset({"follow_up", "linkedin_task", "call_task"}),
    # open -> done (the rep), timed_out (the step's timeout), cancelled (the sequence stopped)
    statuses=frozenset({"open", "done", "timed_out", "cancelled"}),
    id_prefix="tsk_",
    select=_campaign_tasks,
    sort_at=_campaign_sort_at,
)

HANDOFF_TASKS = TaskSource(
    name="handoff",
    kinds=frozenset({"onboarding_item", "renewal_alert", CSM_ASSIGNMENT}),
    # open -> done (the owner, or the CSM), cancelled (the handoff was cancelled)
    statuses=frozenset({"open", "done", "cancelled"}),
    id_prefix=HANDOFF_TASK_PREFIX,
    select=handoff_tasks_select,
    sort_at=handoff_sort_at,
)

SOURCES: tuple[TaskSource, ...] = (CAMPAIGN_TASKS, HANDOFF_TASKS)
TASK_KINDS = frozenset().union(*(s.kinds for s in SOURCES))
TASK_STATUSES = frozenset().union(*(s.statuses for s in SOURCES))


def source_of(task_id: str) -> TaskSource | None:
    return next((s for s in SOURCES if task_id.startswith(s.id_prefix)), None)


def _branch(
    source: TaskSource,
    *,
    owner_email: str,
    status: str | None,
    kind: str | None,
    after: Sequence[Any] | None,
    limit: int,
) -> Select | None:
    if kind is not None and kind not in source.kinds:
        return None
    if status is not None and status not in source.statuses:
        return None
    inner = source.select().subquery()
    stmt = select(*(inner.c[c] for c in TASK_COLUMNS)).where(inner.c.owner_email == owner_email)
    if status is not None:
        stmt = stmt.where(inner.c.status == status)
    if kind is not None:
        stmt = stmt.where(inner.c.kind == kind)
    if after is not None:
        at, task_id = after
        stmt = stmt.where(
            or_(inner.c.sort_at > at, and_(inner.c.sort_at == at, inner.c.id > task_id))
        )
    return stmt.order_by(inner.c.sort_at, inner.c.id).limit(limit + 1)


async def list_tasks(
    session: AsyncSession,
    *,
    owner_email: str,
    status: str | None,
    kind: str | None,
    after: Sequence[Any] | None,
    limit: int,
) -> Sequence[Row]:
    """The caller's tasks of every source, soonest due first, at most ``limit + 1``."""
    branches = [
        b
        for s in SOURCES
        if (
            b := _branch(
                s, owner_email=owner_email, status=status, kind=kind, after=after, limit=limit
            )
        )
        is not None
    ]
    if not branches:
        return []
    merged = union_all(*(b.subquery().select() for b in branches)).subquery("tasks")
    stmt = select(merged).order_by(merged.c.sort_at, merged.c.id).limit(limit + 1)
    return (await session.execute(stmt)).all()


async def lock_campaign_task(session: AsyncSession, *, task_id: str) -> RepTask | None:
    """The campaign task row, locked: its completion and the sequence's own update serialize."""
    return await session.get(RepTask, task_id, with_for_update=True)


def mark_done(task: RepTask, *, by: str, at: dt.datetime) -> None:
    task.status, task.done_at, task.done_by = "done", at, by
