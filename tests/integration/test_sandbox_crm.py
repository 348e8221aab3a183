"""The CRM sandbox over real HTTP: HubSpot's paths, shapes, validation and errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from sandbox.crm import CrmStore, install

TOKEN = "pat-sandbox-crm-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_READY_POLL_INTERVAL = 0.01  # how often to look at uvicorn's `started`; the deadline bounds it


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers, which would take over pytest's Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port until the block exits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = _EmbeddedServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped while starting")
        assert loop.time() < deadline, "uvicorn did not start"
        await asyncio.sleep(_READY_POLL_INTERVAL)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def crm_client(
    state_dir: Path, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, CrmStore]]:
    app = FastAPI()
    store = install(app, state_dir, **options)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        yield http, store


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with crm_client(tmp_path / "crm", access_token=TOKEN) as (http, _):
        yield http


def _deal(external_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "properties": {
            "dealname": "Acme Corp — platform",
            "amount": "47500.00",
            "closedate": "2025-03-31",
            "dealstage": "contractsent",
            "pipeline": "default",
            "dealflow_deal_id": external_id,
            **properties,
        }
    }


async def test_deals_are_created_read_and_upserted_by_the_external_id(
    crm: httpx.AsyncClient,
) -> None:
    created = await crm.post("/crm/v3/objects/deals", json=_deal("deal_1"), headers=AUTH)
    assert created.status_code == 201, created.text
    deal = created.json()
    assert set(deal) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert deal["id"].isdigit() and deal["archived"] is False
    assert deal["properties"]["hs_object_id"] == deal["id"]
    assert deal["properties"]["closedate"] == "2025-03-31T00:00:00.000Z"

    by_external = await crm.get(
        "/crm/v3/objects/deals/deal_1",
        params={"idProperty": "dealflow_deal_id", "properties": "dealstage,dealflow_deal_id"},
        headers=AUTH,
    )
    assert by_external.status_code == 200
    assert by_external.json()["id"] == deal["id"]
    assert by_external.json()["properties"]["dealflow_deal_id"] == "deal_1"
    assert "amount" not in by_external.json()["properties"]  # only what was asked for
    default_read = await crm.get(f"/crm/v3/objects/deals/{deal['id']}", headers=AUTH)
    assert default_read.json()["properties"]["amount"] == "47500.00"

    duplicate = await crm.post("/crm/v3/objects/deals", json=_deal("deal_1"), headers=AUTH)
    assert duplicate.status_code == 409
    assert duplicate.json()["category"] == "CONFLICT" and deal["id"] in duplicate.json()["message"]

    won = await crm.patch(
        "/crm/v3/objects/deals/deal_1",
        params={"idProperty": "dealflow_deal_id"},
        json={"properties": {"dealstage": "closedwon", "amount": 51000}},
        headers=AUTH,
    )
    assert won.status_code == 200, won.text
    assert won.json()["id"] == deal["id"]
    assert won.json()["properties"]["dealstage"] == "closedwon"
    assert won.json()["updatedAt"] >= deal["updatedAt"]

    upserted = await crm.patch(
        "/crm/v3/objects/deals/deal_2",
        params={"idProperty": "dealflow_deal_id"},
        json=_deal("deal_2", dealstage="closedwon"),
        headers=AUTH,
    )
    assert upserted.status_code == 200, upserted.text
    assert upserted.json()["id"] != deal["id"]

    batch = await crm.post(
        "/crm/v3/objects/deals/batch/upsert",
        json={
            "inputs": [
                {"idProperty": "dealflow_deal_id", "id": "deal_2", "properties": {"amount": "1"}},
                {
                    "idProperty": "dealflow_deal_id",
                    "id": "deal_3",
                    "properties": {"dealname": "Initech", "dealstage": "closedwon"},
                },
            ]
        },
        headers=AUTH,
    )
    assert batch.status_code == 200, batch.text
    assert [r["new"] for r in batch.json()["results"]] == [False, True]

    view = (await crm.get("/_sandbox/crm/deals/deal_1")).json()
    stages = [(h["old"], h["new"]) for h in view["history"] if h["property"] == "dealstage"]
    assert stages == [(None, "contractsent"), ("contractsent", "closedwon")]
    assert [h["source"] for h in view["history"] if h["property"] == "amount"] == [
        "CREATE",
        "UPDATE",
    ]


async def test_notes_and_tasks_are_associated_to_the_deal_and_shown_by_the_control_api(
    crm: httpx.AsyncClient,
) -> None:
    deal = (await crm.post("/crm/v3/objects/deals", json=_deal("deal_9"), headers=AUTH)).json()
    association = [
        {
            "to": {"id": deal["id"]},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}],
        }
    ]
    note = await crm.post(
        "/crm/v3/objects/notes",
        json={
            "properties": {
                "hs_note_body": "Closed won: signed by Ada and Grace.",
                "hs_timestamp": "2025-03-31T10:00:00Z",
            },
            "associations": association,
        },
        headers=AUTH,
    )
    assert note.status_code == 201, note.text
    task_association = [
        {
            "to": {"id": deal["id"]},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 216}],
        }
    ]
    task = await crm.post(
        "/crm/v3/objects/tasks",
        json={
            "properties": {
                "hs_task_subject": "Kick-off call with Acme",
                "hs_task_priority": "HIGH",
                "hs_timestamp": "1743415200000",
            },
            "associations": task_association,
        },
        headers=AUTH,
    )
    assert task.status_code == 201, task.text
    assert task.json()["properties"]["hs_task_status"] == "NOT_STARTED"
    assert task.json()["properties"]["hs_timestamp"] == "2025-03-31T10:00:00.000Z"

    wrong_type = await crm.post(
        "/crm/v3/objects/tasks",
        json={"properties": {"hs_timestamp": "2025-03-31"}, "associations": association},
        headers=AUTH,
    )
    assert wrong_type.status_code == 400  # 214 is note→deal, not task→deal
    no_such_deal = await crm.post(
        "/crm/v3/objects/notes",
        json={
            "properties": {"hs_note_body": "x", "hs_timestamp": "2025-03-31"},
            "associations": [{**association[0], "to": {"id": "999"}}],
        },
        headers=AUTH,
    )
    assert no_such_deal.status_code == 400

    view = await crm.get("/_sandbox/crm/deals/deal_9")
    assert view.status_code == 200
    body = view.json()
    assert body["deal"]["id"] == deal["id"]
    assert [n["properties"]["hs_note_body"] for n in body["notes"]] == [
        "Closed won: signed by Ada and Grace."
    ]
    assert [t["properties"]["hs_task_subject"] for t in body["tasks"]] == [
        "Kick-off call with Acme"
    ]
    assert body["deal"]["associations"]["notes"]["results"][0]["id"] == note.json()["id"]
    with_associations = await crm.get(
        f"/crm/v3/objects/deals/{deal['id']}", params={"associations": "tasks"}, headers=AUTH
    )
    assert list(with_associations.json()["associations"]) == ["tasks"]
    missing = await crm.get("/_sandbox/crm/deals/nope")
    assert missing.status_code == 404 and missing.json()["category"] == "OBJECT_NOT_FOUND"


async def test_bad_input_and_missing_credentials_get_hubspot_errors(crm: httpx.AsyncClient) -> None:
    unauthenticated = await crm.post("/crm/v3/objects/deals", json=_deal("deal_x"))
    wrong_token = await crm.get(
        "/crm/v3/objects/deals/1", headers={"Authorization": "Bearer someone-else"}
    )
    for response in (unauthenticated, wrong_token):
        assert response.status_code == 401
        assert response.json()["status"] == "error"
        assert response.json()["category"] == "INVALID_AUTHENTICATION"
        assert {"message", "correlationId"} <= set(response.json())

    invalid = await crm.post(
        "/crm/v3/objects/deals",
        json=_deal("deal_x", amount="lots", dealstage="signed", dealstge="typo"),
        headers=AUTH,
    )
    assert invalid.status_code == 400
    error = invalid.json()
    assert error["category"] == "VALIDATION_ERROR"
    problems = json.loads(error["message"].removeprefix("Property values were not valid: "))
    assert {(p["name"], p["error"]) for p in problems} == {
        ("amount", "INVALID_FLOAT"),
        ("dealstge", "PROPERTY_DOESNT_EXIST"),
        ("dealstage", "INVALID_OPTION"),
    }
    not_found = await crm.get("/crm/v3/objects/deals/123", headers=AUTH)
    assert not_found.status_code == 404 and not_found.json()["category"] == "OBJECT_NOT_FOUND"
    not_unique = await crm.get(
        "/crm/v3/objects/deals/x", params={"idProperty": "dealname"}, headers=AUTH
    )
    assert not_unique.status_code == 400
    plain_patch = await crm.patch(
        "/crm/v3/objects/deals/123", json={"properties": {"amount": "1"}}, headers=AUTH
    )
    assert plain_patch.status_code == 404  # only idProperty PATCHes create
    not_json = await crm.post("/crm/v3/objects/deals", content=b"{", headers=AUTH)
    assert not_json.status_code == 400 and not_json.json()["category"] == "VALIDATION_ERROR"
    unknown_type = await crm.post("/crm/v3/objects/widgets", json={}, headers=AUTH)
    assert unknown_type.status_code == 400
    # nothing half-written
    assert (await crm.get("/_sandbox/crm/deals")).json() == {"deals": []}


async def test_any_bearer_token_is_accepted_unless_one_is_configured_and_state_persists(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "crm"
    async with crm_client(state_dir) as (http, _):
        created = await http.post(
            "/crm/v3/objects/deals", json=_deal("deal_p"), headers={"Authorization": "Bearer x"}
        )
        assert created.status_code == 201
        empty = await http.post(
            "/crm/v3/objects/deals", json=_deal("deal_q"), headers={"Authorization": "Bearer"}
        )
        assert empty.status_code == 401
    assert json.loads((state_dir / "crm.json").read_text())["objects"]
    async with crm_client(state_dir) as (http, store):
        view = await http.get("/_sandbox/crm/deals/deal_p")
        assert view.status_code == 200
        assert view.json()["deal"]["id"] == created.json()["id"]
        assert (
            store.get("deals", "deal_p", id_property="dealflow_deal_id").id == created.json()["id"]
        )


async def test_the_control_view_finds_a_deal_by_its_crm_id_and_patch_by_id_updates_it(
    crm: httpx.AsyncClient,
) -> None:
    # A rep's deal made in the CRM itself: no dealflow id yet.
    created = await crm.post(
        "/crm/v3/objects/deals",
        json={"properties": {"dealname": "Rep's deal", "dealstage": "contractsent"}},
        headers=AUTH,
    )
    crm_id = created.json()["id"]
    view = await crm.get(f"/_sandbox/crm/deals/{crm_id}")
    assert view.status_code == 200 and view.json()["deal"]["id"] == crm_id

    # What the closing does with the deal's external_id: PATCH by that id, tagging our id.
    for _ in range(2):  # idempotent
        patched = await crm.patch(
            f"/crm/v3/objects/deals/{crm_id}",
            json={"properties": {"dealstage": "closedwon", "dealflow_deal_id": "deal_ext"}},
            headers=AUTH,
        )
        assert patched.status_code == 200 and patched.json()["id"] == crm_id
    by_ours = (await crm.get("/_sandbox/crm/deals/deal_ext")).json()
    assert by_ours["deal"]["id"] == crm_id
    assert by_ours["deal"]["properties"]["dealstage"] == "closedwon"
    assert len((await crm.get("/_sandbox/crm/deals")).json()["deals"]) == 1
    unknown = await crm.patch(
        "/crm/v3/objects/deals/crm-acme-2027",
        json={"properties": {"dealstage": "closedwon"}},
        headers=AUTH,
    )
    assert unknown.status_code == 404  # by id, a PATCH never creates (HubSpot's rule)
