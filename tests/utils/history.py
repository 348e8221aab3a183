"""What a workflow's history says about its activities, for tests and the chaos report."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHandle


@dataclass
class ActivityRun:
    """One scheduled activity: its first argument and, once it ended, its last attempt's end.

    The history records only the last attempt's start (earlier ones live in its retry state),
    so ``attempt`` is how many attempts the activity needed (0: never started)."""

    type: str
    input: Any  # the first argument, as the data converter's JSON
    attempt: int = 0
    completed: bool = False
    result: Any = None  # as JSON, once completed


def activity_runs(
    events: Iterable[HistoryEvent], activity_type: str | None = None
) -> list[ActivityRun]:
    """Every activity the history scheduled (only ``activity_type``'s, if given), in order."""
    runs: dict[int, ActivityRun] = {}  # scheduled event id -> its run
    for event in events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            attrs = event.activity_task_scheduled_event_attributes
            if activity_type in (None, attrs.activity_type.name):
                runs[event.event_id] = ActivityRun(
                    type=attrs.activity_type.name, input=_first(attrs.input.payloads)
                )
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in runs:
                runs[started.scheduled_event_id].attempt = started.attempt
        elif event.HasField("activity_task_completed_event_attributes"):
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in runs:
                run = runs[done.scheduled_event_id]
                run.completed = True
                run.result = _first(done.result.payloads)
    return list(runs.values())


def _first(payloads: Sequence[Payload]) -> Any:
    """The first payload as JSON; None when there is none or it is not JSON (a None result)."""
    if payloads and payloads[0].metadata.get("encoding") == b"json/plain":
        return json.loads(payloads[0].data)
    return None


async def history_runs(
    handle: WorkflowHandle, activity_type: str | None = None
) -> list[ActivityRun]:
    return activity_runs([e async for e in handle.fetch_history_events()], activity_type)
