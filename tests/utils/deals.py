"""Helpers for tests that drive deals through the API."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import WorkflowHandle

from tests.utils.polling import eventually

REP = "maya.chen@dealflow.example"
OTHER_REP = "diego.alvarez@dealflow.example"
OPS = "sam.rivera@dealflow.example"
FINANCE = "sarah.okafor@dealflow.example"
SALES_VP = "marcus.bell@dealflow.example"
LEGAL = "hannah.weiss@dealflow.example"
CFO = "david.levin@dealflow.example"

HISTORIES = Path(__file__).resolve().parent.parent / "replay" / "histories"

BASE_DEAL: dict[str, Any] = {
    "name": "Acme Robotics — Platform 2027",
    "currency": "USD",
    "term_months": 12,
    "billing_frequency": "annual",
    "payment_terms_days": 30,
    "discount_pct": "5",
    "line_items": [
        {
            "sku": "PLAT-ENT",
            "description": "dealflow Platform, Enterprise seat",
            "quantity": "100",
            "unit_price": "450.00",
        },
        {
            "sku": "ONB-STD",
            "description": "Standard onboarding package",
            "quantity": "1",
            "unit_price": "5000.00",
        },
    ],
    "account": {
        "name": "Acme Robotics Inc.",
        "domain": "acme-robotics.example",
        "country": "US",
        "region": "NY",
        "employees": 220,
        "industry": "Manufacturing",
    },
    "signers": [
        {
            "name": "Jordan Blake",
            "email": "jordan.blake@acme-robotics.example",
            "title": "VP Operations",
            "routing_order": 1,
        }
    ],
    "custom_terms": [],
}


def deal_payload(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(BASE_DEAL)
    for key, value in overrides.items():
        if key == "account":
            body["account"].update(value)
        else:
            body[key] = value
    return body


async def create_deal(http: httpx.AsyncClient, headers: dict, **overrides: Any) -> dict:
    resp = await http.post("/v1/deals", json=deal_payload(**overrides), headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def wait_for_stage(
    http: httpx.AsyncClient, deal_id: str, headers: dict, stage: str, timeout: float = 60
) -> dict:
    """Poll GET /v1/deals/{id} until the live stage is ``stage`` (fail at the deadline).

    ``closed_won`` is also reached at ``handoff``, the stage a won deal moves on to at once.
    """
    last: dict = {}
    wanted = {"closed_won", "handoff"} if stage == "closed_won" else {stage}

    async def reached() -> dict | None:
        nonlocal last
        resp = await http.get(f"/v1/deals/{deal_id}", headers=headers)
        assert resp.status_code == 200, resp.text
        last = resp.json()
        return last if last["stage"] in wanted and last["live"] else None

    try:
        return await eventually(reached, timeout=timeout, what=f"deal {deal_id} at {stage!r}")
    except AssertionError:
        raise AssertionError(
            f"deal {deal_id} did not reach {stage!r}; last seen: {last.get('stage')} "
            f"({last.get('stage_reason')})"
        ) from None


async def record_history(handle: WorkflowHandle, name: str) -> None:
    """With DEALFLOW_RECORD_HISTORIES=1, save the workflow's history for the replay tests."""
    if os.environ.get("DEALFLOW_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    data = json.loads(history.to_json())
    (HISTORIES / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
