"""Helpers for tests that act as signers through the DocuSign sandbox."""

from __future__ import annotations

import httpx

from tests.utils.approvals import eventually
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage

COUNTERSIGNER = "david.levin@dealflow.example"  # config/org.toml


async def envelopes_for(http: httpx.AsyncClient, deal_id: str, version: int = 1) -> list[dict]:
    resp = await http.get(
        "/_sandbox/docusign/envelopes",
        params={"custom_field": f"dealflow_key={deal_id}.v{version}"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["envelopes"]


async def envelope_of(http: httpx.AsyncClient, deal_id: str, version: int = 1) -> dict:
    async def probe():
        found = await envelopes_for(http, deal_id, version)
        return found[0] if found else None

    return await eventually(probe, what=f"envelope for {deal_id} v{version}")


async def act(http: httpx.AsyncClient, envelope_id: str, email: str, action: str, **body) -> dict:
    resp = await http.post(
        f"/_sandbox/docusign/envelopes/{envelope_id}/recipients/{email}/{action}", json=body
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def approved_deal(http: httpx.AsyncClient, auth, **overrides) -> dict:
    """A deal needing only the Finance Director, approved: it waits at awaiting_signature."""
    deal = await create_deal(http, auth(REP), **overrides)
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    sid = f"{deal['id']}.v1.s0.finance_director"

    async def decided():
        r = await http.post(
            f"/v1/approvals/{sid}/decision", json={"decision": "approve"}, headers=auth(FINANCE)
        )
        return r.status_code == 200

    await eventually(decided, what="finance approval accepted")
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    return deal


async def sign_all(http: httpx.AsyncClient, envelope: dict) -> None:
    """Every signer views and signs, in routing order (as the sandbox enforces)."""
    for r in sorted(envelope["recipients"], key=lambda r: r["routing_order"]):
        await act(http, envelope["envelope_id"], r["email"], "view")
        await act(http, envelope["envelope_id"], r["email"], "sign")
