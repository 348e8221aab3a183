"""Integration modules share one session stack (tests/conftest.py); each leaves it as it was."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

# Terminated a few at a time: the dev server is shared with the session's worker.
AT_ONCE = 16


@pytest.fixture(autouse=True, scope="module")
async def _no_workflow_outlives_its_module(temporal_client: Client):
    """Terminate the workflows a module left running on the session's dev server.

    A deal a test leaves in ``awaiting_signature`` keeps polling DocuSign every 2 s (the
    session's signature timing) until its envelope expires, a day later: dozens of them, each
    history growing by a poll's events every 2 s, were replayed by the session's worker for
    the rest of the run (test_signature.py alone leaves 14). Late in a CI run their workflow
    tasks took 10-30 s (histories of 300 KB), timed out and were replayed again, and a test
    after them starved (a worker-loss test's hold not reached within 60 s). Modules run one
    after another in a process (xdist's loadfile) and each process has its own dev server, so
    what is running at the end of a module is that module's."""
    yield
    running = [
        (wf.id, wf.run_id)
        async for wf in temporal_client.list_workflows("ExecutionStatus = 'Running'")
    ]
    gate = asyncio.Semaphore(AT_ONCE)

    async def terminate(workflow_id: str, run_id: str | None) -> None:
        async with gate:
            try:
                await temporal_client.get_workflow_handle(workflow_id, run_id=run_id).terminate(
                    reason="the test module that started it has ended"
                )
            except RPCError:  # it ended meanwhile
                pass

    await asyncio.gather(*(terminate(w, r) for w, r in running))
