"""GET /v1/tasks and POST /v1/tasks/{id}/done on real sequences; a contact becomes a deal."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text

from api.schemas import DealCreate
from db import deals as deals_db
from db.contact_deals import ContactDeal
from db.models import Deal
from tests.utils.campaigns import (
    campaign_payload,
    contact,
    create_and_launch,
    email_step,
    mail_to,
    poll,
    reply,
    unique,
)
from tests.utils.deals import OTHER_REP, REP, deal_payload


async def _tasks(http, headers, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        q = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        resp = await http.get("/v1/tasks", params=q, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        items += body["items"]
        if not (cursor := body["next_cursor"]):
            return items


async def _task_of(http, auth, campaign_id: str, kind: str) -> dict:
    async def probe():
        found = [
            t for t in await _tasks(http, auth(REP), kind=kind) if t["campaign_id"] == campaign_id
        ]
        return found[0] if found else None

    return await poll(f"{kind} task of {campaign_id}", probe)


async def _history(http, auth, campaign_id: str, email: str) -> list[dict]:
    resp = await http.get(f"/v1/campaigns/{campaign_id}/contacts/{email}", headers=auth(REP))
    assert resp.status_code == 200, resp.text
    return resp.json()["history"]


async def test_call_and_linkedin_tasks_marked_done_tell_the_sequence_which_moves_on(
    http, auth, sandbox
):
    person = f"call.{unique()}@acme.example"
    steps = [
        {"channel": "call_task", "subject": "Call {{ first_name }}", "body": "Ask about Q3."},
        {"channel": "linkedin_task", "subject": "Connect with {{ first_name }}"},
        email_step(subject="After our call"),
    ]
    payload = campaign_payload([contact(person)], steps=steps, test_mode={"wait_day_seconds": 0})
    campaign_id = await create_and_launch(http, auth(REP), payload)

    call = await _task_of(http, auth, campaign_id, "call_task")
    assert call["status"] == "open" and call["title"] == "Call Call"
    assert call["contact_email"] == person and call["step_index"] == 0 and call["due_at"]
    assert call["id"] not in {t["id"] for t in await _tasks(http, auth(OTHER_REP))}
    other = await http.post(f"/v1/tasks/{call['id']}/done", headers=auth(OTHER_REP))
    assert other.status_code == 403
    done = await http.post(f"/v1/tasks/{call['id']}/done", headers=auth(REP))
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "done" and body["done_by"] == REP and body["done_at"]
    assert body["workflow"]["told"] is True
    again = await http.post(f"/v1/tasks/{call['id']}/done", headers=auth(REP))
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_closed"

    # The sequence heard it: the LinkedIn step comes next, then, once that is done, the email.
    linkedin = await _task_of(http, auth, campaign_id, "linkedin_task")
    assert linkedin["title"] == "Connect with Call" and linkedin["step_index"] == 1
    assert not mail_to(sandbox, person)
    assert (
        await http.post(f"/v1/tasks/{linkedin['id']}/done", headers=auth(REP))
    ).status_code == 200

    async def emailed():
        return mail_to(sandbox, person) or None

    await poll("the email step after both tasks", emailed)
    done_ids = {t["id"] for t in await _tasks(http, auth(REP), status="done")}
    open_ids = {t["id"] for t in await _tasks(http, auth(REP))}
    assert {call["id"], linkedin["id"]} <= done_ids and not {call["id"], linkedin["id"]} & open_ids
    history = await _history(http, auth, campaign_id, person)
    done_events = [h for h in history if h["event"] == "task.done"]
    assert len(done_events) == 2 and all(REP in h["detail"] for h in done_events)
    unknown = await http.post("/v1/tasks/tsk_nope/done", headers=auth(REP))
    assert unknown.status_code == 404
    for params in ({"status": "finished"}, {"kind": "meeting"}, {"cursor": "x"}, {"limit": 0}):
        bad = await http.get("/v1/tasks", params=params, headers=auth(REP))
        assert bad.status_code == 422, (params, bad.text)


async def test_an_interested_reply_gives_a_follow_up_task_and_the_contact_becomes_one_deal(
    http, auth, sandbox
):
    tag = unique()
    company = f"Initech {tag}"
    person = f"peter.{tag}@initech-{tag}.example"
    payload = campaign_payload(
        [contact(person, company=company, country="GB", title="VP Finance")],
        steps=[email_step(), email_step(subject=None, body="Following up.", wait_days=1)],
        test_mode={"wait_day_seconds": 30, "reply_window_seconds": 0},
    )
    campaign_id = await create_and_launch(http, auth(REP), payload)

    async def first_mail():
        return mail_to(sandbox, person) or None

    first = (await poll(f"mail to {person}", first_mail))[0]
    text = "Sounds interesting - we are interested, please send details."
    resp = await reply(http, to_message=first, text=text)
    assert resp.json()["classification"]["kind"] == "interested", resp.text

    # The rep's Slack message says it is one call away, and how.
    async def told():
        found = [m.text for m in sandbox.state.slack.messages(user_email=REP) if person in m.text]
        return found or None

    message = (await poll("the rep's Slack message", told))[0]
    assert "One call away" in message
    assert f"/v1/campaigns/{campaign_id}/contacts/{person}/deal" in message

    follow_up = await _task_of(http, auth, campaign_id, "follow_up")
    assert follow_up["status"] == "open" and follow_up["contact_email"] == person
    done = await http.post(f"/v1/tasks/{follow_up['id']}/done", headers=auth(REP))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done" and done.json()["workflow"] is None
    assert (
        await http.post(f"/v1/tasks/{follow_up['id']}/done", headers=auth(REP))
    ).status_code == 409

    # Two calls at once, then a third: one deal.
    path = f"/v1/campaigns/{campaign_id}/contacts/{person}/deal"
    first_two = await asyncio.gather(*(http.post(path, headers=auth(REP)) for _ in range(2)))
    assert sorted(r.status_code for r in first_two) == [200, 201], [r.text for r in first_two]
    third = await http.post(path, headers=auth(REP))
    assert third.status_code == 200
    assert len({r.json()["id"] for r in (*first_two, third)}) == 1
    deal = third.json()
    assert deal["stage"] == "draft" and deal["owner_email"] == REP
    assert deal["account"]["name"] == company and deal["account"]["country"] == "GB"
    assert deal["account"]["domain"] == f"initech-{tag}.example"
    assert deal["signers"] == [
        {"name": "Peter Tester", "email": person, "title": "VP Finance", "routing_order": 1}
    ]
    assert campaign_id in deal["notes"] and "interested" in deal["notes"] and text in deal["notes"]

    # Each side names the other.
    read = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
    origin = [t for t in read["timeline"] if t["event"] == "deal.created_from_campaign"]
    assert len(origin) == 1 and person in origin[0]["detail"] and campaign_id in origin[0]["detail"]
    history = await _history(http, auth, campaign_id, person)
    assert [h for h in history if h["event"] == "deal.created" and deal["id"] in h["detail"]]
    listed = (await http.get("/v1/deals", params={"customer": company}, headers=auth(REP))).json()
    assert [i["id"] for i in listed["items"]] == [deal["id"]]

    assert (await http.post(path, headers=auth(OTHER_REP))).status_code == 403
    missing = await http.post(
        f"/v1/campaigns/{campaign_id}/contacts/nobody@initech.example/deal", headers=auth(REP)
    )
    assert missing.status_code == 404
    await http.post(f"/v1/campaigns/{campaign_id}/cancel", headers=auth(REP))


async def test_a_contact_without_a_country_needs_one_in_the_body(http, auth):
    person = f"nocountry.{unique()}@globex.example"
    payload = campaign_payload([contact(person, country=None)])
    resp = await http.post("/v1/campaigns", json=payload, headers=auth(REP))
    assert resp.status_code == 201, resp.text
    path = f"/v1/campaigns/{resp.json()['id']}/contacts/{person}/deal"
    refused = await http.post(path, headers=auth(REP))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["field"] == "country"
    bad = await http.post(path, json={"country": "usa"}, headers=auth(REP))
    assert bad.status_code == 422
    made = await http.post(path, json={"country": "US", "region": "CA"}, headers=auth(REP))
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["account"]["country"] == "US" and body["account"]["region"] == "CA"
    assert "No reply recorded." in body["notes"]


async def test_two_calls_racing_for_one_contact_answer_with_the_deal_that_committed_first(
    http, auth, sessions
):
    # Pinned down: this test's transaction makes the contact's deal and holds it uncommitted;
    # the API call then makes its own and blocks on the link's primary key; once it is seen
    # waiting, the test commits, and the API must roll its deal back and answer with ours.
    person = f"race.{unique()}@hooli.example"
    resp = await http.post(
        "/v1/campaigns", json=campaign_payload([contact(person)]), headers=auth(REP)
    )
    assert resp.status_code == 201, resp.text
    campaign_id = resp.json()["id"]
    data = DealCreate(**deal_payload(name=f"Held {unique()}")).model_dump()
    async with sessions() as held:
        ours = await deals_db.create_deal(held, owner_email=REP, data=data)
        held.add(
            ContactDeal(
                campaign_id=campaign_id, contact_email=person, deal_id=ours.id, created_by=REP
            )
        )
        await held.flush()
        call = asyncio.create_task(
            http.post(f"/v1/campaigns/{campaign_id}/contacts/{person}/deal", headers=auth(REP))
        )

        async def api_waits_on_the_key():
            async with sessions() as s:
                waiting = await s.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query ILIKE 'INSERT INTO contact_deals%'"
                    )
                )
            return waiting or call.done()

        await poll("the API blocked on the contact's key", api_waits_on_the_key)
        assert not call.done(), (await call).text
        await held.commit()
    answer = await call
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == ours.id
    async with sessions() as s:
        made = await s.scalar(
            select(func.count()).select_from(Deal).where(Deal.account_domain == "hooli.example")
        )
    assert made == 0  # the API's own deal was rolled back with its link
