"""Signature tracking with the DocuSign sandbox, then closed-won (CRM, Stripe), end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import httpx

from dealflow.ids import deal_closure_workflow_id, signature_workflow_id
from tests.utils.approvals import eventually, path_of, slack_messages
from tests.utils.deals import OPS, REP, record_history, wait_for_stage
from tests.utils.signature import (
    COUNTERSIGNER,
    act,
    approved_deal,
    envelope_of,
    envelopes_for,
    sign_all,
)

SIGNER = "jordan.blake@acme-robotics.example"  # tests/utils/deals.py BASE_DEAL


async def _deal(http, deal_id, headers) -> dict:
    return (await http.get(f"/v1/deals/{deal_id}", headers=headers)).json()


async def _record(temporal_client, deal_id: str, name: str, version: int = 1) -> None:
    await record_history(
        temporal_client.get_workflow_handle(signature_workflow_id(deal_id, version)),
        f"signature_{name}",
    )
    await record_history(
        temporal_client.get_workflow_handle(deal_closure_workflow_id(deal_id)),
        f"deal_closure_{name}",
    )


async def test_signers_sign_in_order_and_the_deal_closes_won_with_crm_and_stripe(
    http: httpx.AsyncClient, auth, temporal_client
):
    deal = await approved_deal(http, auth, external_id="crm-acme-2027")
    envelope = await envelope_of(http, deal["id"])
    order = [(r["email"], r["routing_order"]) for r in envelope["recipients"]]
    assert order == [(SIGNER, 1), (COUNTERSIGNER, 2)]  # customer first, then our CFO

    # The countersigner cannot sign before the customer (the sandbox enforces routing order).
    early = await http.post(
        f"/_sandbox/docusign/envelopes/{envelope['envelope_id']}/recipients/{COUNTERSIGNER}/sign",
        json={},
    )
    assert early.status_code == 409
    await act(http, envelope["envelope_id"], SIGNER, "view")

    async def delivered():
        sig = (await _deal(http, deal["id"], auth(REP)))["signature"]
        return sig and any(
            r["email"] == SIGNER and r["status"] == "delivered" for r in sig["recipients"]
        )

    await eventually(delivered, what="recipient delivered shown")
    await sign_all(http, envelope)
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")

    assert final["signature"]["status"] == "completed"
    assert final["signature"]["method"] == "docusign"
    assert {r["status"] for r in final["signature"]["recipients"]} == {"completed"}
    kinds = {d["kind"]: d for d in final["documents"]}
    assert {"signed_contract", "certificate"} <= set(kinds)
    signed = await http.get(path_of(kinds["signed_contract"]["url"]), headers=auth(REP))
    assert signed.status_code == 200
    assert hashlib.sha256(signed.content).hexdigest() == kinds["signed_contract"]["sha256"]

    assert final["crm"]["status"] == "closed_won"
    crm = (await http.get("/_sandbox/crm/deals/" + deal["id"])).json()
    assert crm["deal"]["properties"]["dealstage"] == "closedwon"
    assert len(crm["notes"]) == 1 and kinds["signed_contract"]["sha256"] in str(crm["notes"])
    billing = final["billing"]
    assert billing["stripe_customer_id"].startswith("cus_")
    assert billing["stripe_invoice_id"].startswith("in_")
    assert "revenue.recorded" in [t["event"] for t in final["timeline"]]
    await _record(temporal_client, deal["id"], "signed_to_closed_won")


async def test_decline_then_patch_then_resign_with_a_new_envelope(http, auth, temporal_client):
    deal = await approved_deal(http, auth)
    first = await envelope_of(http, deal["id"])
    await act(http, first["envelope_id"], SIGNER, "view")
    await act(http, first["envelope_id"], SIGNER, "decline", reason="Need net 45")
    declined = await wait_for_stage(http, deal["id"], auth(REP), "declined")
    assert "Need net 45" in declined["stage_reason"]

    async def told():
        return [
            m
            for m in await slack_messages(http, REP)
            if "declined" in (m["text"] or "") and deal["name"] in m["text"]
        ]

    assert await eventually(told, what="the rep told in Slack")

    # A change only the Legal role reviews... would add Legal; a note changes nothing reviewed.
    patched = await http.patch(
        f"/v1/deals/{deal['id']}", json={"notes": "Customer asked to re-sign"}, headers=auth(REP)
    )
    assert patched.status_code == 200, patched.text
    second = await envelope_of(http, deal["id"], version=2)
    assert second["envelope_id"] != first["envelope_id"]
    live = await _deal(http, deal["id"], auth(REP))
    assert {a["role"]: a["status"] for a in live["approvals"]} == {
        "finance_director": "carried_over"
    }
    await sign_all(http, second)
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
    assert final["quote"]["version"] == 2
    await _record(temporal_client, deal["id"], "declined_then_resigned")


async def test_wet_signature_upload_completes_signature_and_voids_the_envelope(
    http, auth, temporal_client
):
    deal = await approved_deal(http, auth)
    await envelope_of(http, deal["id"])  # sent: the upload must void it
    bad = await http.post(
        f"/v1/deals/{deal['id']}/signature/offline",
        files={"file": ("signed.pdf", b"not a pdf", "application/pdf")},
        headers=auth(REP),
    )
    assert bad.status_code == 422
    pdf = b"%PDF-1.4\n% wet-signed scan\n%%EOF\n"
    resp = await http.post(
        f"/v1/deals/{deal['id']}/signature/offline",
        files={"file": ("signed.pdf", pdf, "application/pdf")},
        headers=auth(REP),
    )
    assert resp.status_code == 202, resp.text
    final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
    assert final["signature"]["method"] == "wet"
    wet = next(d for d in final["documents"] if d["kind"] == "wet_signed")
    assert wet["sha256"] == hashlib.sha256(pdf).hexdigest()
    voided = (await envelopes_for(http, deal["id"]))[0]
    assert voided["status"] == "voided"
    await _record(temporal_client, deal["id"], "wet_signed")


async def test_a_lost_connect_webhook_is_caught_by_polling(http, auth):
    deal = await approved_deal(http, auth)
    envelope = await envelope_of(http, deal["id"])
    await http.post("/_sandbox/docusign/connect/drop", json={"count": 1000})
    try:
        await sign_all(http, envelope)
        final = await wait_for_stage(http, deal["id"], auth(REP), "closed_won")
    finally:
        await http.post("/_sandbox/docusign/connect/drop", json={"count": 0})
    assert final["signature"]["polls"] >= 1


async def test_duplicate_and_out_of_order_connect_events_change_nothing(http, auth):
    deal = await approved_deal(http, auth)
    envelope = await envelope_of(http, deal["id"])
    await act(http, envelope["envelope_id"], SIGNER, "view")
    await act(http, envelope["envelope_id"], SIGNER, "sign")

    async def signed():
        sig = (await _deal(http, deal["id"], auth(REP)))["signature"]
        return sig and any(
            r["email"] == SIGNER and r["status"] == "completed" for r in sig["recipients"]
        )

    await eventually(signed, what="first signer completed")
    deliveries = (
        await http.get(
            "/_sandbox/docusign/connect/deliveries",
            params={"envelope_id": envelope["envelope_id"]},
        )
    ).json()["deliveries"]
    sent = next(d for d in deliveries if d["event"] == "envelope-sent")
    signed_event = next(d for d in deliveries if d["event"] == "recipient-completed")
    for d in (signed_event, sent):  # a duplicate, then an old event arriving late
        assert (
            await http.post(f"/_sandbox/docusign/connect/redeliver/{d['delivery_id']}")
        ).status_code == 200

    async def dropped():
        sig = (await _deal(http, deal["id"], auth(REP)))["signature"]
        return sig["duplicates_dropped"] >= 1 and sig

    sig = await eventually(dropped, what="duplicates dropped")
    assert next(r for r in sig["recipients"] if r["email"] == SIGNER)["status"] == "completed"


async def test_forged_or_missing_connect_hmac_is_401_and_changes_nothing(http, auth, settings):
    deal = await approved_deal(http, auth)
    envelope = await envelope_of(http, deal["id"])
    body = json.dumps(
        {
            "event": "envelope-completed",
            "data": {
                "envelopeId": envelope["envelope_id"],
                "envelopeSummary": {
                    "status": "completed",
                    "customFields": {
                        "textCustomFields": [{"name": "dealflow_key", "value": f"{deal['id']}.v1"}]
                    },
                },
            },
        }
    ).encode()
    missing = await http.post("/v1/webhooks/docusign", content=body)
    assert missing.status_code == 401
    forged_sig = base64.b64encode(hmac.new(b"wrong", body, hashlib.sha256).digest()).decode()
    forged = await http.post(
        "/v1/webhooks/docusign", content=body, headers={"X-DocuSign-Signature-1": forged_sig}
    )
    assert forged.status_code == 401
    live = await _deal(http, deal["id"], auth(REP))
    assert live["stage"] == "awaiting_signature"
    assert live["signature"]["events_received"] == 0 or live["signature"]["status"] != "completed"
    key = settings.secret("docusign_connect_hmac_key").encode()
    good = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    ok = await http.post(
        "/v1/webhooks/docusign", content=body, headers={"X-DocuSign-Signature-1": good}
    )
    assert ok.status_code == 200 and ok.json()["matched"] is True
    # A verified but false claim of completion does not complete it: the GET says otherwise.
    live = await _deal(http, deal["id"], auth(REP))
    assert live["stage"] == "awaiting_signature"


async def test_only_ops_may_retry_closing(http, auth):
    deal = await approved_deal(http, auth)
    resp = await http.post(f"/v1/deals/{deal['id']}/closing/retry", headers=auth(REP))
    assert resp.status_code == 403
    resp = await http.post(f"/v1/deals/{deal['id']}/closing/retry", headers=auth(OPS))
    assert resp.status_code == 202


async def test_cancel_while_awaiting_signature_voids_the_envelope(http, auth):
    deal = await approved_deal(http, auth)
    await envelope_of(http, deal["id"])
    resp = await http.post(f"/v1/deals/{deal['id']}/cancel", headers=auth(REP))
    assert resp.status_code == 200 and resp.json()["stage"] == "cancelled"
    envelope = (await envelopes_for(http, deal["id"]))[0]
    assert envelope["status"] == "voided"
    assert envelope["voided_reason"]
