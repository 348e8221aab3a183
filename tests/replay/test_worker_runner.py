"""The worker's workflow runner (passthrough modules, compiled-once workflow code) replays every
committed history, and each new workflow instance still runs its module afresh."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

import workflows
from dealflow.temporal import DATA_CONVERTER
from worker import _CODE_CACHE, SANDBOX_PASSTHROUGH, WORKFLOWS, workflow_runner

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
HISTORY_TEXT = {p: p.read_text() for p in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays_with_the_workers_runner(path: Path):
    history = WorkflowHistory.from_json(path.stem, HISTORY_TEXT[path])
    replayer = Replayer(
        workflows=list(WORKFLOWS), data_converter=DATA_CONVERTER, workflow_runner=workflow_runner()
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_workflow_modules_compile_once_and_execute_per_instance():
    workflow_runner()  # installs the cache
    assert sys.meta_path[0] is _CODE_CACHE
    specs = [_CODE_CACHE.find_spec("workflows.noop", workflows.__path__) for _ in range(2)]
    modules = [importlib.util.module_from_spec(s) for s in specs]
    for spec, module in zip(specs, modules, strict=True):
        spec.loader.exec_module(module)
    codes = [s.loader.get_code("workflows.noop") for s in specs]
    assert codes[0] is codes[1]  # compiled once
    assert modules[0].NoopWorkflow is not modules[1].NoopWorkflow  # executed per instance
    # Only our workflow package goes through the cache.
    assert _CODE_CACHE.find_spec("domain.money", None) is None
    assert type(specs[0].loader) is not importlib.machinery.SourceFileLoader


def test_modules_that_read_files_are_not_passed_through():
    for name in ("domain.tax", "domain.approval_policy", "domain.billing", "domain.handoff"):
        assert name not in SANDBOX_PASSTHROUGH
    restrictions = workflow_runner().restrictions
    assert set(SANDBOX_PASSTHROUGH) <= restrictions.passthrough_modules
