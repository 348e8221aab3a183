"""The closure shows a child's resume that comes in with the completion of its forwarded retry.

The flaky ``test_a_failing_request_activity_parks_the_closure_and_one_retry_resumes_it``: the
closure forwards ops' retry to the parked chain (SignalExternalWorkflowExecution); the chain
resumes and signals ``child_parked`` (no failure). On a loaded machine the closure's workflow
task for "your signal was delivered" starts only after that signal is in its history, so both
come in one activation, and the SDK runs signal handlers first. Closures before
``CHILD_PARK_SEEN_PATCH`` then re-read the park count after the forward and took the resume as
seen: they stayed in needs_attention over a running chain. A live test cannot order the server's
events, so this one does: it moves the resume of a recorded (patched) history into the forward's
workflow task and replays it — the closure must still record the resume (the record_stage that
follows in the history).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from dealflow.temporal import DATA_CONVERTER
from worker import WORKFLOWS

HISTORY = (
    Path(__file__).parent / "histories" / "deal_closure_child_reparked_while_resume_recorded.json"
)


def _kind(event: dict) -> str:
    return event["eventType"].removeprefix("EVENT_TYPE_")


def resume_with_the_forward(history: dict) -> dict:
    """The history cut after the last forwarded retry, in the loaded server's order:
    ExternalWorkflowExecutionSignaled, task scheduled, the child's resume signal, task started,
    task completed, then the closure's command (record_stage of the stage it goes back to)."""
    events = history["events"]
    kinds = [_kind(e) for e in events]
    pattern = [
        "EXTERNAL_WORKFLOW_EXECUTION_SIGNALED",
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_TASK_STARTED",
        "WORKFLOW_TASK_COMPLETED",
        "WORKFLOW_EXECUTION_SIGNALED",
        "WORKFLOW_TASK_SCHEDULED",
        "WORKFLOW_TASK_STARTED",
        "WORKFLOW_TASK_COMPLETED",
        "ACTIVITY_TASK_SCHEDULED",
    ]
    starts = [i for i in range(len(kinds)) if kinds[i : i + len(pattern)] == pattern]
    assert starts, "no forwarded retry followed by the child's resume in the history"
    i = starts[-1]
    ext, scheduled, started, completed = (copy.deepcopy(events[i + k]) for k in range(4))
    signal, command = copy.deepcopy(events[i + 4]), copy.deepcopy(events[i + 8])
    assert signal["workflowExecutionSignaledEventAttributes"]["signalName"] == "child_parked"
    first = int(ext["eventId"])
    signal["eventId"] = str(first + 2)
    started["eventId"] = str(first + 3)
    completed["eventId"] = str(first + 4)
    completed["workflowTaskCompletedEventAttributes"]["startedEventId"] = str(first + 3)
    command["eventId"] = str(first + 5)
    command["activityTaskScheduledEventAttributes"]["workflowTaskCompletedEventId"] = str(first + 4)
    return {**history, "events": events[:i] + [ext, scheduled, signal, started, completed, command]}


async def test_a_resume_in_the_same_task_as_the_forwarded_retry_is_recorded():
    doctored = resume_with_the_forward(json.loads(HISTORY.read_text()))
    history = WorkflowHistory.from_json("resume-with-forward", json.dumps(doctored))
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    # Without the fix: "Nondeterminism error: No command scheduled for event ...
    # ActivityTaskScheduled" — the closure issued nothing: it never showed the resume.
    assert result.replay_failure is None, result.replay_failure
