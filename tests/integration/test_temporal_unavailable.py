"""While the Temporal server cannot be reached, the API answers 503 with Retry-After.

A second dev server of the test's own is started, an API (the real app, with the client
``dealflow.temporal.connect_for_api`` builds) is pointed at it, and the server is stopped. The
database and the session's main stack keep running, so the deal and its pending approval step
are real; only this API's Temporal is gone.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import stripe
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.closing import INVOICE_STEP
from db.closing_models import ClosingStep
from db.models import ApprovalRequest
from dealflow.ids import SEARCH_ATTRIBUTES
from dealflow.settings import Settings
from dealflow.temporal import DATA_CONVERTER, RETRY_AFTER_SECONDS, connect_for_api
from dealflow.tools import TEMPORAL, find_tool
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage
from tests.utils.polling import eventually


@asynccontextmanager
async def _api(settings: Settings, engine, client) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine, temporal=client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            yield api


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    error = resp.json()["error"]
    assert error["code"] == "temporal_unavailable"
    assert set(error) == {"code", "message", "details"}


def _signed_invoice_paid(invoice_id: str, settings: Settings) -> tuple[bytes, dict]:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "invoice.paid",
        "created": int(time.time()),
        "data": {"object": {"id": invoice_id, "object": "invoice", "currency": "usd"}},
    }
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(
        payload, settings.secret("stripe_webhook_secret")
    )
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


async def _pending_step(http, auth, sessions) -> tuple[str, str]:
    """A deal waiting for the Finance Director on the main stack: (deal id, step id).

    The stage says awaiting_approval just before the approval chain opens the request; the
    request's row is what the decision route reads first, so wait for it too."""
    deal = await create_deal(http, auth(REP))
    resp = await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    assert resp.status_code == 202, resp.text
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    step_id = f"{deal['id']}.v1.s0.finance_director"

    async def opened() -> bool:
        return await _step_status(sessions, step_id) == "pending"

    await eventually(opened, what=f"the request {step_id} opened")
    return deal["id"], step_id


async def _step_status(sessions, step_id: str) -> str:
    async with sessions() as s:
        return await s.scalar(
            select(ApprovalRequest.status).where(ApprovalRequest.step_id == step_id)
        )


async def test_decision_ready_to_close_and_readyz_answer_503_while_temporal_is_down(
    http, auth, settings, engine, sessions
):
    deal_id, step_id = await _pending_step(http, auth, sessions)
    draft = await create_deal(http, auth(REP))
    # The invoice the deal's closing would have created (what the Stripe webhook looks up).
    invoice_id = f"in_{uuid.uuid4().hex[:16]}"
    async with sessions.begin() as s:
        s.add(
            ClosingStep(
                deal_id=deal_id,
                quote_version=1,
                step=INVOICE_STEP,
                status="done",
                external_ref=invoice_id,
            )
        )

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_tool(TEMPORAL)),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
    )
    own = settings.model_copy(
        update={"temporal_address": env.client.service_client.config.target_host}
    )
    client = await connect_for_api(own, lazy=False)
    stopped = False
    try:
        async with _api(own, engine, client) as api:
            ready = await api.get("/readyz")
            assert ready.status_code == 200, ready.text  # connected: the server is up

            await env.shutdown()
            stopped = True

            started = time.monotonic()
            decision = await api.post(
                f"/v1/approvals/{step_id}/decision",
                json={"decision": "approve", "comment": "while Temporal is down"},
                headers=auth(FINANCE),
            )
            _assert_unavailable(decision)
            closing = await api.post(f"/v1/deals/{draft['id']}/ready-to-close", headers=auth(REP))
            _assert_unavailable(closing)
            # A figure for the report, not an assertion: how long the two calls took.
            print(f"two calls answered 503 in {time.monotonic() - started:.2f} s")

            # Stripe gets the 503 and Retry-After too, so it delivers the payment again later.
            body, headers = _signed_invoice_paid(invoice_id, settings)
            _assert_unavailable(
                await api.post("/v1/webhooks/stripe", content=body, headers=headers)
            )

            not_ready = await api.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["error"]["details"][0]["temporal"].startswith("unavailable")
    finally:
        if not stopped:
            await env.shutdown()

    # Nothing was decided or started behind the 503s: the main stack still waits.
    assert await _step_status(sessions, step_id) == "pending"
    live = await http.get(f"/v1/deals/{draft['id']}", headers=auth(REP))
    assert live.json()["stage"] == "draft"
    assert (await http.get(f"/v1/deals/{deal_id}", headers=auth(REP))).json()[
        "stage"
    ] == "awaiting_approval"


async def test_an_api_whose_temporal_never_answered_starts_and_answers_503(
    http, auth, settings, engine
):
    # The production path: a lazy client (the API starts while Temporal is down) whose first
    # connection attempt fails. A port nothing listens on stands for the server that is down.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(find_tool(TEMPORAL)),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    address = env.client.service_client.config.target_host
    await env.shutdown()
    own = settings.model_copy(update={"temporal_address": address})
    draft = await create_deal(http, auth(REP))
    async with _api(own, engine, await connect_for_api(own, lazy=True)) as api:
        _assert_unavailable(
            await api.post(f"/v1/deals/{draft['id']}/ready-to-close", headers=auth(REP))
        )
        assert (await api.get("/readyz")).status_code == 503
