"""Scenario ``handoff``: closed-won -> package delivered to customer success and CSM assigned.

Each run starts the deal's ``HandoffWorkflow`` exactly as the closure's ``start_handoff``
activity does at closed-won (same id, same input shape), for a deal whose primary contact and
success goals were supplied beforehand, and polls its ``status`` query until the timeline shows
``package.delivered`` (CSM matched, the package mailed to the CSM, finance and support). The
kickoff invite and the plan follow in the same workflow and are not part of the figure.
Signing is left out on purpose: ``signature`` measures that path; this isolates the handoff.
"""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio.service import RPCError

from bench.common import Batch, BenchError, Metric, Scenario, ms_since, run_batch
from dealflow.ids import handoff_workflow_id
from messages.handoff import HandoffInput, HandoffTiming
from tests.utils.deals import REP
from workflows.handoff import HandoffWorkflow

QUERY_RPC_TIMEOUT = timedelta(seconds=10)
DETAILS = {
    "contacts": [
        {"name": "Bench Contact", "email": "bench@acme-robotics.example", "role": "primary"}
    ],
    "success_goals": ["Measure the handoff"],
}


class HandoffScenario(Scenario):
    name = "handoff"
    metrics = (
        Metric("handoff_package", "handoff (package delivered)", headline=True, short="handoff"),
        Metric("handoff_csm_workflow_clock", "  CSM assigned (workflow timeline)"),
    )
    poll_what = "status query"

    async def batch(self, n: int) -> Batch:
        ids = []
        for _ in range(n):
            deal_id = await self.api.create_deal(REP)
            resp = await self.api.http.patch(
                f"/v1/handoffs/{deal_id}", json=DETAILS, headers=self.api.auth(REP)
            )
            if resp.status_code != 200:
                raise BenchError(f"PATCH handoff answered {resp.status_code}: {resp.text}")
            ids.append(deal_id)
        batch = Batch()
        await run_batch(ids, lambda deal_id: self.hand_over(deal_id, batch), self.cfg.concurrency)
        return batch

    async def hand_over(self, deal_id: str, batch: Batch) -> None:
        wall_started = time.time()
        started = time.perf_counter()
        handle = await self.stack.client.start_workflow(
            HandoffWorkflow.run,
            HandoffInput(deal_id=deal_id, owner_email=REP, timing=HandoffTiming()),
            id=handoff_workflow_id(deal_id),
            task_queue=self.stack.task_queue,
        )

        async def probe():
            try:
                status = await handle.query(HandoffWorkflow.status, rpc_timeout=QUERY_RPC_TIMEOUT)
            except RPCError:
                return None
            if status.status == "needs_attention":
                raise BenchError(f"handoff {deal_id} waits: {status.status_reason}")
            events = {t.event for t in status.timeline}
            return status if "package.delivered" in events else None

        status, seen = await self.poll_until(f"handoff {deal_id} delivered", probe, batch, started)
        assigned = next(t.at for t in status.timeline if t.event == "csm.assigned")
        batch.add("handoff_package", ms_since(started, seen))
        batch.add("handoff_csm_workflow_clock", (assigned.timestamp() - wall_started) * 1000)
        await self._finish(deal_id, handle, status.csm.email, batch)

    async def _finish(self, deal_id: str, handle, csm: str, batch: Batch) -> None:  # noqa: ANN001
        """Untimed: the CSM marks every item done, so the handoff goes live and frees the CSM's
        capacity (config/org.toml) for the next runs, as it would in real life."""

        async def onboarding():
            s = await handle.query(HandoffWorkflow.status, rpc_timeout=QUERY_RPC_TIMEOUT)
            return s if s.status in ("onboarding", "live") else None

        status, _ = await self.poll_until(
            f"handoff {deal_id} plan", onboarding, Batch(), time.perf_counter()
        )
        for item in status.items:
            resp = await self.api.http.post(
                f"/v1/handoffs/{deal_id}/items/{item.id}/done", headers=self.api.auth(csm)
            )
            if resp.status_code not in (200, 409):
                raise BenchError(f"item done answered {resp.status_code}: {resp.text}")

        async def live():
            s = await handle.query(HandoffWorkflow.status, rpc_timeout=QUERY_RPC_TIMEOUT)
            return s if s.status == "live" else None

        await self.poll_until(f"handoff {deal_id} live", live, Batch(), time.perf_counter())
