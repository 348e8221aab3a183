"""GET /v1/deals/{id} answers from the database mirror when the closure cannot answer a query.

Two ways a query fails that the chaos run met: the server refuses to query a workflow whose
last workflow task failed (FAILED_PRECONDITION, "Workflow Task in failed state", as right after
a worker died mid-task), and the Temporal server is away (UNAVAILABLE). A read is answered from
the deal row either way; a write still answers 503 while Temporal is away.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from db.models import Deal
from dealflow.ids import SEARCH_ATTRIBUTES, deal_closure_workflow_id
from dealflow.temporal import DATA_CONVERTER, RETRY_AFTER_SECONDS, connect_for_api
from dealflow.tools import TEMPORAL, find_tool
from tests.integration.test_temporal_unavailable import _api
from tests.utils.deals import REP, create_deal
from tests.utils.polling import eventually
from workflows.deal_closure import DealClosureWorkflow


@workflow.defn(name="DealClosureWorkflow", sandboxed=False)
class BrokenClosure:
    """A closure whose code raises on every workflow task (the task fails, is retried, fails)."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("broken workflow code: every workflow task fails")


async def _mirror_stage(sessions, deal_id: str, stage: str) -> None:
    """The deal row as a closure leaves it: the stage it last mirrored."""
    async with sessions.begin() as s:
        await s.execute(update(Deal).where(Deal.id == deal_id).values(stage=stage))


async def test_a_closure_whose_workflow_task_failed_is_read_from_the_deal_row(
    http, auth, temporal_client, sessions
):
    deal = await create_deal(http, auth(REP))
    await _mirror_stage(sessions, deal["id"], "awaiting_approval")
    queue = f"broken-{uuid.uuid4().hex[:8]}"
    # A short workflow task timeout: the task the worker holds when it stops times out soon.
    handle = await temporal_client.start_workflow(
        "DealClosureWorkflow",
        id=deal_closure_workflow_id(deal["id"]),
        task_queue=queue,
        task_timeout=timedelta(seconds=1),
    )
    try:
        async with Worker(temporal_client, task_queue=queue, workflows=[BrokenClosure]):

            async def task_failed() -> bool:
                kinds = [e.WhichOneof("attributes") async for e in handle.fetch_history_events()]
                return "workflow_task_failed_event_attributes" in kinds

            await eventually(task_failed, what="the closure's workflow task failing")

        async def refused() -> bool:
            """The server refuses the query (once the task the worker held has timed out; until
            then the query waits on that task and times out)."""
            try:
                await handle.query(DealClosureWorkflow.status, rpc_timeout=timedelta(seconds=2))
            except RPCError as err:
                if err.status == RPCStatusCode.FAILED_PRECONDITION:
                    return True
                # Still waiting on that task: our 2 s bound (CANCELLED) or the server's own
                # query deadline (DEADLINE_EXCEEDED, "timed out before a worker could process").
                assert err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED), err
                return False
            raise AssertionError("a broken closure answered its query")

        await eventually(refused, what="the query refused: Workflow Task in failed state")
        resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))
        assert resp.status_code == 200, resp.text
        assert resp.json()["stage"] == "awaiting_approval"
        assert resp.json()["live"] is False
    finally:
        await handle.terminate("test over")
        with pytest.raises(WorkflowFailureError):
            await handle.result()


async def test_while_temporal_is_away_a_read_answers_from_the_row_and_a_write_503(
    http, auth, settings, engine, sessions
):
    deal = await create_deal(http, auth(REP))
    await _mirror_stage(sessions, deal["id"], "awaiting_approval")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_tool(TEMPORAL)),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
    )
    own = settings.model_copy(
        update={"temporal_address": env.client.service_client.config.target_host}
    )
    client = await connect_for_api(own, lazy=False)
    stopped = False
    try:
        async with _api(own, engine, client) as api:
            await env.shutdown()
            stopped = True
            read = await api.get(f"/v1/deals/{deal['id']}", headers=auth(REP))
            assert read.status_code == 200, read.text
            assert read.json()["stage"] == "awaiting_approval"
            assert read.json()["live"] is False
            # A write decided from the mirror would be a guess: it waits for Temporal.
            write = await api.post(f"/v1/deals/{deal['id']}/retry", headers=auth(REP))
            assert write.status_code == 503, write.text
            assert write.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
            assert write.json()["error"]["code"] == "temporal_unavailable"
    finally:
        if not stopped:
            await env.shutdown()
