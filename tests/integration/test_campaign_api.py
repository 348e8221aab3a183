"""The campaign API's edges: auth, bad input, idempotency, the preflight report, signatures."""

from __future__ import annotations

import json
import time

import pytest

from tests.utils.campaigns import (
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    mail_to,
    poll,
    post_signed,
    signed_headers,
    unique,
)
from tests.utils.deals import OPS, OTHER_REP, REP


async def test_reps_own_campaigns_others_are_refused(http, auth):
    payload = campaign_payload([contact(f"x.{unique()}@acme.example")])
    assert (await http.post("/v1/campaigns", json=payload)).status_code == 401
    bad_key = {"Authorization": "Bearer nope"}
    assert (await http.post("/v1/campaigns", json=payload, headers=bad_key)).status_code == 401
    # Ops is not a rep: cannot create.
    assert (await http.post("/v1/campaigns", json=payload, headers=auth(OPS))).status_code == 403
    created = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
    assert created.status_code == 201 and created.json()["status"] == "draft"
    campaign_id = created.json()["id"]
    for method, path in [
        ("GET", f"/v1/campaigns/{campaign_id}"),
        ("POST", f"/v1/campaigns/{campaign_id}/launch"),
        ("POST", f"/v1/campaigns/{campaign_id}/pause"),
    ]:
        resp = await http.request(method, path, headers=auth(OTHER_REP))
        assert resp.status_code == 403, (path, resp.text)
        assert resp.json()["error"]["code"] == "forbidden"
    # Ops may read.
    assert (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(OPS))).status_code == 200
    missing = await http.get("/v1/campaigns/cmp_nope", headers=auth(REP))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # A draft cannot be paused.
    paused = await http.post(f"/v1/campaigns/{campaign_id}/pause", headers=auth(REP))
    assert paused.status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extra_field": 1}, "extra_field"),
        ({"steps": []}, "steps"),
        ({"steps": [email_step(send_window={"start": "25:00", "end": "17:00"})]}, "steps.0"),
        ({"steps": [email_step(send_window={"start": "09:00", "end": "08:00"})]}, "steps.0"),
        (
            {
                "steps": [
                    email_step(send_window={"start": "09:00", "end": "17:00", "days": ["xyz"]})
                ]
            },
            "steps.0",
        ),
        ({"steps": [email_step(body="Hi {{ first_name ")]}, "steps.0"),
        ({"steps": [email_step(subject=None)]}, "body"),
        ({"steps": [email_step(wait_days=-1)]}, "steps.0.wait_days"),
        ({"contacts": [{"email": "not-an-address", "timezone": "UTC"}]}, "contacts.0.email"),
        (
            {
                "sender": {
                    "email": "a@dealflow.example",
                    "name": "A",
                    "daily_limit": 0,
                    "timezone": "UTC",
                }
            },
            "sender.daily_limit",
        ),
        (
            {
                "sender": {
                    "email": "a@dealflow.example",
                    "name": "A",
                    "daily_limit": 5,
                    "timezone": "Mars/Base",
                }
            },
            "sender",
        ),
        (
            {
                "steps": [
                    {
                        "channel": "email",
                        "variants": [
                            {"name": "A", "subject": "s", "body": "b"},
                            {"name": "A", "subject": "t", "body": "c"},
                        ],
                    }
                ]
            },
            "steps.0",
        ),
    ],
)
async def test_bad_campaigns_are_422_with_the_field(http, auth, change, field):
    payload = campaign_payload([contact(f"x.{unique()}@acme.example")])
    payload.update(change)
    resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert body["code"] == "invalid_request"
    assert any(d["field"].startswith(field) for d in body["details"]), body["details"]


async def test_bad_json_is_400(http, auth):
    resp = await http.post(
        "/v1/campaigns",
        content=b"{not json",
        headers={**auth(REP), "Content-Type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


async def test_the_same_idempotency_key_returns_the_first_campaign(http, auth):
    payload = campaign_payload([contact(f"x.{unique()}@acme.example")])
    headers = {**auth(REP), "Idempotency-Key": unique("key-")}
    first = await http.post("/v1/campaigns", json=payload, headers=headers)
    again = await http.post("/v1/campaigns", json=payload, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    payload["name"] = "something else"
    reused = await http.post("/v1/campaigns", json=payload, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


async def test_preflight_excludes_with_reasons_merges_duplicates_and_uses_fallbacks(
    http, auth, sandbox
):
    tag = unique()
    ok = f"ok.{tag}@acme.example"
    no_company = f"nocompany.{tag}@acme.example"
    unsubscribed = f"gone.{tag}@acme.example"
    blocked_domain = f"blocked{tag}.example"
    blocked = f"someone@{blocked_domain}"
    bad_zone = f"zone.{tag}@acme.example"
    # Earlier opt-outs: one address, one whole domain (do-not-contact).
    for body in ({"email": unsubscribed, "reason": "unsubscribed"}, {"domain": blocked_domain}):
        resp = await http.post("/v1/suppressions", json=body, headers=auth(REP))
        assert resp.status_code == 201, resp.text
    contacts = [
        contact(ok, title=None),
        contact(ok.upper(), title=None, fields={"plan": "enterprise"}),  # a duplicate: merged
        {**contact(no_company), "company": None},
        contact(unsubscribed),
        contact(blocked),
        contact(bad_zone, timezone="Mars/Olympus_Mons"),
    ]
    payload = campaign_payload(
        contacts,
        steps=[
            email_step(
                subject="{{ first_name }} at {{ company }}",
                body="Hello {{ title }} ({{ plan }}), {{ nickname | default('friend') }}.",
            )
        ],
        fallbacks={"title": "there"},
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)

    async def report():
        body = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
        return body if body["preflight"] and body["preflight"]["state"] == "done" else None

    campaign = await poll("preflight report", report)
    pre = campaign["preflight"]
    reasons = {e["email"]: e["reason"] for e in pre["excluded_contacts"]}
    assert set(reasons) == {no_company, unsubscribed, blocked, bad_zone}
    assert "missing field 'company'" in reasons[no_company]
    assert "no fallback" in reasons[no_company]
    assert reasons[unsubscribed] == "suppressed: unsubscribed"
    assert reasons[blocked] == "suppressed: do_not_contact_domain"
    assert "unknown time zone" in reasons[bad_zone]
    assert pre["duplicates_merged"] == [{"email": ok, "occurrences": 2}]
    assert pre["eligible"] == 1 and pre["excluded"] == 4
    assert pre["by_reason"]["missing_field:company"] == 1
    assert pre["sender"]["ok"] is True

    message = (await poll("mail to the one eligible contact", lambda: _some(mail_to(sandbox, ok))))[
        0
    ]
    # The fallback filled the missing title, the duplicate's field was merged in, the
    # template's own default applied.
    assert "Hello there (enterprise), friend." in message["text"]
    for email in (no_company, unsubscribed, blocked, bad_zone):
        assert mail_to(sandbox, email) == []
    excluded = (
        await http.get(f"/v1/campaigns/{campaign_id}/contacts/{bad_zone}", headers=auth(REP))
    ).json()
    assert excluded["status"] == "excluded" and "time zone" in excluded["excluded_reason"]


async def test_a_sender_outside_our_domains_fails_the_preflight(http, auth, sandbox):
    someone = f"p.{unique()}@acme.example"
    payload = campaign_payload([contact(someone)], sender_email="sales@not-ours.example")
    campaign_id = await create_and_launch(http, auth(REP), payload)

    async def failed():
        body = (await http.get(f"/v1/campaigns/{campaign_id}", headers=auth(REP))).json()
        return body if body["status"] == "failed" else None

    campaign = await poll("campaign failed", failed)
    assert not campaign["preflight"]["sender"]["ok"]
    assert "not on a domain we send for" in campaign["preflight"]["sender"]["problems"][0]
    assert "not on a domain" in campaign["status_reason"]
    assert mail_to(sandbox, someone) == []


async def test_mail_webhooks_refuse_bad_signatures(http):
    payload = {"from": "a@b.example", "subject": "hi", "text": "hello"}
    body = json.dumps(payload).encode()
    for path in ("/v1/webhooks/email/inbound", "/v1/webhooks/email/events"):
        unsigned = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 401
        assert unsigned.json()["error"]["code"] == "invalid_signature"
        wrong = await http.post(path, content=body, headers=signed_headers(body, secret="nope"))
        assert wrong.status_code == 401
        old = await http.post(
            path, content=body, headers=signed_headers(body, at=int(time.time()) - 301)
        )
        assert old.status_code == 401 and "too old" in old.json()["error"]["message"]
        # Signed over a different body: the signature does not cover what was sent.
        tampered = await http.post(path, content=body + b" ", headers=signed_headers(body))
        assert tampered.status_code == 401


async def test_unmatched_mail_is_still_classified_and_recorded(http):
    resp = await post_signed(
        http,
        "/v1/webhooks/email/inbound",
        {
            "from": f"stranger.{unique()}@gmail.com",
            "to": "maya.chen@dealflow.example",
            "subject": "Out of office",
            "text": "I am out of the office until December 3 with limited access to email.",
            "headers": {"Auto-Submitted": "auto-replied"},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["matched"] is None
    assert body["classification"]["kind"] == "auto_reply"
    assert body["classification"]["rule"]
    bad = await post_signed(http, "/v1/webhooks/email/inbound", {"subject": 5})
    assert bad.status_code == 422
    event = await post_signed(
        http, "/v1/webhooks/email/events", {"type": "explode", "message_id": "x@y"}
    )
    assert event.status_code == 422


async def _some(messages):
    return messages or None
