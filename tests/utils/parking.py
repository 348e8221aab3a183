"""Helpers for the poison tests: arm a failure, see the park through the API, retry it."""

from __future__ import annotations

import httpx
from temporalio.client import Client

from dealflow.faults import FailurePoints
from dealflow.settings import Settings
from messages.parking import RetryBudget
from tests.utils.deals import wait_for_stage
from tests.utils.polling import eventually

# A budget spent in well under a second: the transient-failure test reaches its park fast.
SHORT_BUDGET = RetryBudget(
    initial_interval_seconds=0.1, maximum_interval_seconds=0.2, maximum_attempts=3
)


def failure_points(settings: Settings) -> FailurePoints:
    return FailurePoints(settings.state_dir, enabled=True)


async def wait_parked(http: httpx.AsyncClient, deal_id: str, headers: dict, step: str) -> dict:
    """The deal in needs_attention because ``step`` failed (through GET /v1/deals/{id})."""

    async def probe() -> dict | None:
        deal = await wait_for_stage(http, deal_id, headers, "needs_attention", timeout=90)
        return deal if f"{step} failed" in (deal["stage_reason"] or "") else None

    return await eventually(probe, timeout=90, what=f"{deal_id} parked on {step}")


async def search_attribute_stage(client: Client, deal_id: str, stage: str) -> None:
    """The closure's DealStage search attribute (what the Temporal UI lists) reaches ``stage``."""

    async def probe() -> bool:
        query = f'DealId = "{deal_id}" AND DealStage = "{stage}"'
        return bool([w async for w in client.list_workflows(query)])

    await eventually(probe, timeout=30, what=f"DealStage {stage} for {deal_id}")


async def retry(http: httpx.AsyncClient, deal_id: str, headers: dict | None = None) -> dict:
    resp = await http.post(f"/v1/deals/{deal_id}/retry", headers=headers)
    assert resp.status_code == 202, resp.text
    return resp.json()
