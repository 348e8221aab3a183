"""Replay committed workflow histories against today's workflow code.

A change that would break a running workflow (a reordered activity, a removed timer) makes
replay fail here; such a change needs ``workflow.patched``. Refresh the histories after an
intended, patched change with ``DEALFLOW_RECORD_HISTORIES=1 make test``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from dealflow.temporal import DATA_CONVERTER
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
HISTORY_TEXT = {p: p.read_text() for p in HISTORIES}


def test_there_are_committed_histories_for_every_workflow_type():
    from temporalio.workflow import _Definition

    registered = {_Definition.must_from_class(cls).name for cls in WORKFLOWS}
    types = {
        json.loads(HISTORY_TEXT[p])["events"][0]["workflowExecutionStartedEventAttributes"][
            "workflowType"
        ]["name"]
        for p in HISTORIES
    }
    assert registered <= types, f"no committed history for {sorted(registered - types)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_without_nondeterminism(path: Path):
    history = WorkflowHistory.from_json(path.stem, HISTORY_TEXT[path])
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
