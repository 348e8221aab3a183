"""Scenario ``closure``: a deal from ready-to-close until the workflow shows ``awaiting_approval``.

Polls the closure workflow's ``status`` query (through the Temporal client) every poll interval.
"""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio.service import RPCError

from bench.common import Batch, BenchError, Metric, Scenario, ms_since, run_batch
from dealflow.ids import deal_closure_workflow_id

# The committed valid deal the integration tests use (reaches awaiting_approval: its discount
# and size ask for approval). One definition, so the benchmark measures the deal the tests check.
from tests.utils.deals import REP
from workflows.deal_closure import DealClosureWorkflow

TARGET_STAGE = "awaiting_approval"
# Stages the closure passes through before TARGET_STAGE; anything else means the deal did not
# go the expected way (e.g. a changed test payload now needs no approval) and the run stops.
EN_ROUTE_STAGES = frozenset({"quoting"})
# Per query, so a dead server or worker reaches the per-run hang guard instead of retrying on.
QUERY_RPC_TIMEOUT = timedelta(seconds=10)


class ClosureScenario(Scenario):
    name = "closure"
    metrics = (
        Metric("deal_closure", "deal closure (stage seen)", headline=True, short="deal"),
        Metric("ready_to_close_post", "  of which POST ready-to-close"),
        Metric("stage_set_workflow_clock", "  stage set (workflow timeline)"),
    )
    poll_what = "status query"

    async def batch(self, n: int) -> Batch:
        # Deals are created before the timed part, so creation never overlaps a timed closure.
        ids = [await self.api.create_deal(REP) for _ in range(n)]
        batch = Batch()
        await run_batch(ids, lambda deal_id: self.close(deal_id, batch), self.cfg.concurrency)
        await self.api.settle_deliveries(ids, REP, self.cfg.run_timeout)
        return batch

    async def close(self, deal_id: str, batch: Batch) -> None:
        """Time POST ready-to-close until the status query shows awaiting_approval."""
        handle = self.stack.client.get_workflow_handle_for(
            DealClosureWorkflow.run, deal_closure_workflow_id(deal_id)
        )
        wall_started = time.time()
        started = time.perf_counter()
        resp = await self.api.http.post(
            f"/v1/deals/{deal_id}/ready-to-close", headers=self.api.auth(REP)
        )
        posted = time.perf_counter()
        if resp.status_code != 202:
            raise BenchError(f"ready-to-close answered {resp.status_code}: {resp.text}")

        async def probe():
            try:
                status = await handle.query(
                    DealClosureWorkflow.status, rpc_timeout=QUERY_RPC_TIMEOUT
                )
            except RPCError:
                return None  # e.g. not yet answerable right after the start; poll again
            if status.stage == TARGET_STAGE:
                return status
            if status.stage is not None and status.stage not in EN_ROUTE_STAGES:
                raise BenchError(
                    f"deal {deal_id} reached stage {status.stage!r} instead of {TARGET_STAGE!r}; "
                    "the benchmark payload (tests/utils/deals.py) no longer needs approval?"
                )
            return None

        status, seen = await self.poll_until(
            f"deal {deal_id} at {TARGET_STAGE!r}", probe, batch, started
        )
        # The stage change's own timestamp in the workflow's timeline (workflow.now(): the start
        # of the workflow task that set it; same machine, so the same wall clock). Free of
        # polling resolution and a little early; a cross-check, not the headline.
        set_at = next(t.at for t in reversed(status.timeline) if t.event == f"stage.{TARGET_STAGE}")
        batch.add("deal_closure", ms_since(started, seen))
        batch.add("ready_to_close_post", ms_since(started, posted))
        batch.add("stage_set_workflow_clock", (set_at.timestamp() - wall_started) * 1000)
