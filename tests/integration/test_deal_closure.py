"""The deal closure through the public API, on the real dev server, PostgreSQL and sandbox."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import func, select
from temporalio.client import Client

from db.models import AuditEvent, Document, QuoteVersion
from dealflow.ids import deal_closure_workflow_id
from tests.utils.deals import (
    CFO,
    FINANCE,
    LEGAL,
    OPS,
    OTHER_REP,
    REP,
    SALES_VP,
    create_deal,
    record_history,
    wait_for_stage,
)
from tests.utils.history import history_runs


async def test_ready_to_close_prices_renders_and_plans_approvals(
    http: httpx.AsyncClient, auth, temporal_client: Client, sessions
):
    deal = await create_deal(http, auth(REP))
    assert deal["owner_email"] == REP and deal["stage"] == "draft"

    resp = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    started = resp.json()
    assert started["workflow_id"] == deal_closure_workflow_id(deal["id"])
    assert started["status_url"] == f"/v1/deals/{deal['id']}"

    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    # 100 x 450 + 5,000 = 50,000; 5 % off = 47,500; New York 4 % = 1,900.
    assert live["quote"] == {
        "version": 1,
        "subtotal": "50000.00",
        "discount": "2500.00",
        "tax": "1900.00",
        "total": "49400.00",
        "currency": "USD",
        "tax_note": live["quote"]["tax_note"],
    }
    assert [d["kind"] for d in live["documents"]] == ["order_form"]
    approvals = live["approvals"]
    assert [(a["role"], a["approver_email"]) for a in approvals] == [("finance_director", FINANCE)]
    assert "25,000.00" in approvals[0]["reason"]
    events = [t["event"] for t in live["timeline"]]
    assert events[0] == "stage.quoting" and events[-1] == "stage.awaiting_approval"
    assert "quote.priced" in events and "document.rendered" in events

    # The document is downloadable and is what its sha256 says.
    doc = live["documents"][0]
    pdf = await http.get(doc["url"].replace(str(http.base_url).rstrip("/"), ""), headers=auth(REP))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert hashlib.sha256(pdf.content).hexdigest() == doc["sha256"]

    # Findable in the Temporal UI by DealId, with the stage and amount mirrored.
    found = [wf async for wf in temporal_client.list_workflows(f'DealId = "{deal["id"]}"')]
    assert [wf.id for wf in found] == [started["workflow_id"]]
    handle = temporal_client.get_workflow_handle(started["workflow_id"])
    desc = await handle.describe()
    attrs = {k.name: v for k, v in desc.typed_search_attributes}
    assert attrs["DealStage"] == "awaiting_approval"
    assert attrs["DealAmount"] == 49400.0
    assert attrs["OwnerEmail"] == REP
    assert attrs["Customer"] == "Acme Robotics Inc."

    # The database mirrors it: one quote version, stage on the deal row, audit trail.
    async with sessions() as s:
        assert (
            await s.scalar(
                select(func.count())
                .select_from(QuoteVersion)
                .where(QuoteVersion.deal_id == deal["id"])
            )
            == 1
        )
        stages = (
            await s.scalars(
                select(AuditEvent.event)
                .where(AuditEvent.deal_id == deal["id"])
                .order_by(AuditEvent.id)
            )
        ).all()
    # The API's own events and the workflow's stage events interleave; each group is in order.
    assert [e for e in stages if e.startswith("stage.")] == [
        "stage.quoting",
        "stage.awaiting_approval",
    ]
    assert [e for e in stages if e.startswith(("deal.", "closure."))] == [
        "deal.created",
        "closure.started",
    ]
    await record_history(handle, "deal_closure_awaiting_approval")


async def test_second_ready_to_close_returns_the_running_workflow(http, auth):
    deal = await create_deal(http, auth(REP))
    first = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    second = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["workflow_id"] == first.json()["workflow_id"]
    assert second.json()["run_id"] == first.json()["run_id"]


async def test_invalid_deal_waits_in_needs_attention_until_patched(
    http, auth, temporal_client: Client
):
    deal = await create_deal(http, auth(REP), signers=[], account={"region": None})
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    waiting = await wait_for_stage(http, deal["id"], auth(REP), "needs_attention")
    fields = {p["field"] for p in waiting["problems"]}
    assert {"signers", "account.region"} <= fields
    assert "signer" in waiting["stage_reason"]

    patched = await http.patch(
        f"/v1/deals/{deal['id']}",
        json={
            "account": {"region": "WA"},
            "signers": [
                {"name": "Kim Lee", "email": "kim@acme-robotics.example", "routing_order": 1}
            ],
        },
        headers=auth(REP),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["revision"] == 2
    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    assert live["quote"]["version"] == 1
    assert live["problems"] == []
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_needs_attention_then_fixed",
    )


async def test_deal_is_locked_while_awaiting_approval(http, auth):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    resp = await http.patch(
        f"/v1/deals/{deal['id']}", json={"discount_pct": "7"}, headers=auth(REP)
    )
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "deal_locked"


async def test_large_eu_deal_plans_two_stages_and_the_eu_documents(http, auth, temporal_client):
    deal = await create_deal(
        http,
        auth(REP),
        currency="EUR",
        discount_pct="30",
        payment_terms_days=45,
        line_items=[
            {"sku": "PLAT-ENT", "description": "Platform", "quantity": "1000", "unit_price": "600"}
        ],
        account={"country": "DE", "region": None, "tax_id": "DE123456789", "employees": 5000},
        signers=[
            {
                "name": "Anna Vogel",
                "email": "anna@kunde.example",
                "title": "CFO",
                "routing_order": 1,
            }
        ],
        custom_terms=[{"kind": "security", "text": "Annual penetration test report on request."}],
    )
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    assert live["quote"]["tax"] == "0.00"
    assert "Reverse charge" in live["quote"]["tax_note"]
    assert [d["kind"] for d in live["documents"]] == [
        "order_form",
        "msa",
        "dpa",
        "security_exhibit",
        "executive_summary",
    ]
    # Five documents, rendered two per call (RENDER_AT_ONCE): three short activities, each
    # done in its first attempt.
    handle = temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"]))
    attempts = [r.attempt for r in await history_runs(handle, "render_documents")]
    assert attempts == [1, 1, 1], attempts
    by_stage = {(a["stage"], a["role"]) for a in live["approvals"]}
    assert by_stage == {
        (0, "finance_director"),
        (0, "sales_vp"),
        (0, "legal"),
        (0, "infosec"),
        (1, "cfo"),
    }
    # An approver of the deal may read it; their reasons are written out.
    legal = next(a for a in live["approvals"] if a["role"] == "legal")
    assert legal["approver_email"] == LEGAL
    assert "45" in legal["reason"] and "EEA" in legal["reason"]
    resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(CFO))
    assert resp.status_code == 200
    resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(SALES_VP))
    assert resp.status_code == 200


async def test_deal_without_approval_rules_records_that_none_is_needed(http, auth):
    deal = await create_deal(
        http,
        auth(REP),
        discount_pct="0",
        line_items=[
            {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
        ],
    )
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    assert live["approvals"] == [] and live["approval_required"] is False
    assert "approval.not_required" in [t["event"] for t in live["timeline"]]


async def test_cancel_ends_the_closure_once(http, auth, temporal_client: Client):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")

    resp = await http.post(
        f"/v1/deals/{deal['id']}/cancel", json={"reason": "customer went dark"}, headers=auth(OPS)
    )
    # 200 once the cancellation is recorded; 202 when it was not recorded within the route's
    # bound (a busy worker): the closure still ends cancelled on its own.
    assert resp.status_code in (200, 202), resp.text
    if resp.status_code == 200:
        assert resp.json()["stage"] == "cancelled"
    await wait_for_stage(http, deal["id"], auth(REP), "cancelled")
    again = await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
    assert again.status_code == 409
    restart = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert restart.status_code == 409
    assert restart.json()["error"]["code"] == "closure_ended"
    # After the workflow ended, GET still answers (from the closed workflow or the database).
    final = await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))
    assert final.json()["stage"] == "cancelled"
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal["id"])),
        "deal_closure_cancelled",
    )


async def test_only_the_owner_can_start_change_or_cancel(http, auth):
    deal = await create_deal(http, auth(REP))
    for method, path, body in (
        ("POST", f"/v1/deals/{deal['id']}/ready-to-close", None),
        ("PATCH", f"/v1/deals/{deal['id']}", {"name": "x"}),
        ("POST", f"/v1/deals/{deal['id']}/cancel", None),
    ):
        resp = await http.request(method, path, json=body, headers=auth(OTHER_REP))
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "forbidden"
    resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(OTHER_REP))
    assert resp.status_code == 403
    resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(FINANCE))
    assert resp.status_code == 403  # not (yet) an approver of this deal
    resp = await http.get(f"/v1/deals/{deal['id']}", headers=auth(OPS))
    assert resp.status_code == 200


async def test_documents_are_stored_once_per_kind_and_version(http, auth, sessions):
    deal = await create_deal(http, auth(REP))
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    live = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    async with sessions() as s:
        rows = (await s.scalars(select(Document).where(Document.deal_id == deal["id"]))).all()
    assert [(r.kind, r.version, r.sha256) for r in rows] == [
        (d["kind"], d["version"], d["sha256"]) for d in live["documents"]
    ]
