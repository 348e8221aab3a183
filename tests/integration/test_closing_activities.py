"""The closed-won activities against real stripe-mock, the real CRM sandbox and PostgreSQL.

Stripe calls are counted by recording what the SDK's own httpx client sends, so "a re-run makes
no new Stripe calls" is checked at the wire. stripe-mock is stateless and sends no webhooks:
the webhook tests sign events with the SDK's own signing helper, as Stripe would.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import stripe
from sqlalchemy import delete, select
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.closing import STRIPE_REJECTED, ClosingActivities
from db import deals as deals_db
from db.closing_models import ClosingStep, Commission, RevenueScheduleRow
from dealflow.faults import CrashPoints
from dealflow.ids import deal_closure_workflow_id
from dealflow.settings import Settings
from dealflow.stack import free_port
from dealflow.temporal import DATA_CONVERTER
from domain.billing import load_commission_policy
from domain.money import quantize
from domain.pricing import price_quote
from domain.tax import load_tax_table
from integrations.crm import HubSpotCrm
from integrations.stripe import build_stripe_client
from messages.closure import ClosingInput, InvoicePaid, SignedDocumentRef
from tests.utils.deals import REP, create_deal


@dataclass
class StripeRequest:
    method: str
    path: str
    idempotency_key: str | None
    form: dict[str, str]


class RecordingHTTPClient(stripe.HTTPXClient):
    """The SDK's httpx client, noting every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[StripeRequest] = []

    async def request_async(self, method, url, headers, post_data=None):  # type: ignore[no-untyped-def]
        text = post_data.decode() if isinstance(post_data, bytes) else post_data or ""
        form = dict(parse_qsl(text))
        self.sent.append(
            StripeRequest(method.upper(), urlsplit(url).path, headers.get("Idempotency-Key"), form)
        )
        return await super().request_async(method, url, headers, post_data)


@pytest.fixture
def stripe_http() -> RecordingHTTPClient:
    return RecordingHTTPClient()


@pytest.fixture
def closing(
    settings: Settings, sessions, stripe_http: RecordingHTTPClient, state_dir
) -> ClosingActivities:
    return ClosingActivities(
        settings=settings,
        sessions=sessions,
        crm=HubSpotCrm.from_settings(settings),
        stripe_client=build_stripe_client(settings, http_client=stripe_http),
        crash_points=CrashPoints("", state_dir),
    )


async def closing_input(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, **overrides: Any
) -> ClosingInput:
    """A deal created through the API, priced as the closure prices it, closed today."""
    deal = await create_deal(http, auth(REP), **overrides)
    async with sessions() as session:
        row = await deals_db.get_deal(session, deal_id=deal["id"])
        assert row is not None
        terms = deals_db.deal_terms(row)
    quote = price_quote(terms, load_tax_table(settings.tax_table_path))
    return ClosingInput(
        deal_id=deal["id"],
        quote_version=1,
        owner_email=REP,
        external_id=None,
        terms=terms,
        quote=quote,
        close_date=dt.datetime.now(dt.UTC).date(),
        signed_documents=[
            SignedDocumentRef(
                id=f"doc_{kind}",
                kind=kind,
                sha256=f"{i}" * 64,
                url=f"{settings.public_base_url}/v1/documents/doc_{kind}/signed",
            )
            for i, kind in enumerate(("order_form", "msa"))
        ],
    )


async def steps_of(sessions, deal_id: str) -> dict[str, ClosingStep]:
    async with sessions() as session:
        rows = await session.scalars(select(ClosingStep).where(ClosingStep.deal_id == deal_id))
        return {row.step: row for row in rows}


# --- CRM -------------------------------------------------------------------------------------


async def test_crm_deal_is_closed_won_with_one_note_even_when_the_activity_runs_again(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, closing: ClosingActivities
) -> None:
    input = await closing_input(http, auth, settings, sessions)
    env = ActivityEnvironment()
    first = await env.run(closing.mark_crm_closed_won, input)
    assert first.status == "closed_won"
    assert await env.run(closing.mark_crm_closed_won, input) == first

    # The crash window: the CRM made the note, our row never said so. The retry must find
    # the note in the CRM by its reference rather than add a second one.
    async with sessions.begin() as session:
        await session.execute(
            delete(ClosingStep).where(
                ClosingStep.deal_id == input.deal_id, ClosingStep.step == "crm.note"
            )
        )
    assert await env.run(closing.mark_crm_closed_won, input) == first

    view = (await http.get(f"/_sandbox/crm/deals/{input.deal_id}")).json()
    deal = view["deal"]
    assert deal["id"] == first.crm_deal_id
    assert deal["properties"]["dealstage"] == "closedwon"
    assert Decimal(deal["properties"]["amount"]) == input.quote.taxable_amount
    assert deal["properties"]["closedate"].startswith(input.close_date.isoformat())
    assert [note["id"] for note in view["notes"]] == [first.note_id]
    body = view["notes"][0]["properties"]["hs_note_body"]
    for doc in input.signed_documents:
        assert doc.url in body and doc.sha256 in body


# --- Stripe ----------------------------------------------------------------------------------


async def test_annual_deal_gets_one_invoice_sent_and_a_rerun_calls_stripe_no_more(
    http: httpx.AsyncClient,
    auth,
    settings: Settings,
    sessions,
    closing: ClosingActivities,
    stripe_http: RecordingHTTPClient,
) -> None:
    input = await closing_input(http, auth, settings, sessions)
    env = ActivityEnvironment()
    result = await env.run(closing.create_stripe_billing, input)

    assert result.status == "invoice_sent"
    assert result.stripe_customer_id.startswith("cus_")
    assert result.stripe_invoice_id and result.stripe_invoice_id.startswith("in_")
    assert result.stripe_subscription_id is None
    assert result.amount_due == input.quote.total
    today = dt.datetime.now(dt.UTC).date()
    assert result.due_date == today + dt.timedelta(days=input.terms.payment_terms_days)

    inv = result.stripe_invoice_id
    prefix = f"{input.deal_id}.v1."
    # The base deal is taxed in NY: two lines and a tax charge.
    assert [(r.method, r.path, r.idempotency_key) for r in stripe_http.sent] == [
        ("POST", "/v1/customers", prefix + "stripe.customer"),
        ("POST", "/v1/invoices", prefix + "stripe.invoice"),
        ("POST", "/v1/invoiceitems", prefix + "stripe.invoice_item.line.0"),
        ("POST", "/v1/invoiceitems", prefix + "stripe.invoice_item.line.1"),
        ("POST", "/v1/invoiceitems", prefix + "stripe.invoice_item.tax"),
        ("POST", f"/v1/invoices/{inv}/finalize", prefix + "stripe.invoice.finalize"),
        ("POST", f"/v1/invoices/{inv}/send", prefix + "stripe.invoice.send"),
    ]
    customer, invoice, *items = (r.form for r in stripe_http.sent[:5])
    assert customer["email"] == input.terms.signers[0].email
    assert customer["metadata[dealflow_deal_id]"] == input.deal_id
    assert invoice["collection_method"] == "send_invoice"
    assert invoice["days_until_due"] == str(input.terms.payment_terms_days)
    assert all(item["invoice"] == inv for item in items)
    # The items add up to the signed quote's total, tax included, to the cent.
    assert sum(int(item["amount"]) for item in items) == int(input.quote.total * 100)
    assert int(items[-1]["amount"]) == int(input.quote.tax.amount * 100)

    stripe_http.sent.clear()
    assert await env.run(closing.create_stripe_billing, input) == result
    assert stripe_http.sent == []


async def test_monthly_deal_gets_a_subscription_with_the_customers_vat_id_once(
    http: httpx.AsyncClient,
    auth,
    settings: Settings,
    sessions,
    closing: ClosingActivities,
    stripe_http: RecordingHTTPClient,
) -> None:
    input = await closing_input(
        http,
        auth,
        settings,
        sessions,
        billing_frequency="monthly",
        currency="EUR",
        account={"country": "DE", "region": None, "tax_id": "DE123456789"},
    )
    env = ActivityEnvironment()
    result = await env.run(closing.create_stripe_billing, input)

    assert result.status == "subscription_created"
    assert result.stripe_subscription_id and result.stripe_subscription_id.startswith("sub_")
    assert result.stripe_invoice_id and result.stripe_invoice_id.startswith("in_")
    assert result.amount_due == input.quote.payment_schedule[0].amount
    paths = [r.path for r in stripe_http.sent]
    assert paths == [
        "/v1/customers",
        "/v1/products",
        "/v1/products",
        "/v1/subscription_schedules",
    ]
    customer, schedule = stripe_http.sent[0].form, stripe_http.sent[-1].form
    assert customer["tax_id_data[0][type]"] == "eu_vat"
    assert customer["tax_id_data[0][value]"] == "DE123456789"
    assert customer["tax_exempt"] == "reverse"  # B2B inside the EU: reverse charge
    assert schedule["default_settings[collection_method]"] == "send_invoice"
    assert schedule["default_settings[invoice_settings][days_until_due]"] == str(
        input.terms.payment_terms_days
    )
    assert schedule["end_behavior"] == "cancel"
    # Every phase bills monthly; together they last the term and bill the quote's total.
    phases: dict[int, dict[str, str]] = {}
    for name, value in schedule.items():
        if name.startswith("phases["):
            index = int(name[len("phases[") : name.index("]")])
            phases.setdefault(index, {})[name[name.index("]") + 1 :]] = value
    months = sum(int(p["[duration][interval_count]"]) for p in phases.values())
    assert months == input.terms.term_months
    billed = sum(
        int(value) * int(p["[duration][interval_count]"])
        for p in phases.values()
        for key, value in p.items()
        if key.endswith("[price_data][unit_amount]")
    )
    assert billed == int(input.quote.total * 100)
    assert all(
        v == "month" for p in phases.values() for k, v in p.items() if k.endswith("[interval]")
    )

    stripe_http.sent.clear()
    assert await env.run(closing.create_stripe_billing, input) == result
    assert stripe_http.sent == []


async def test_a_stripe_rejection_is_non_retryable_and_the_fixed_retry_redoes_nothing(
    http: httpx.AsyncClient,
    auth,
    settings: Settings,
    sessions,
    closing: ClosingActivities,
    stripe_http: RecordingHTTPClient,
) -> None:
    good = await closing_input(http, auth, settings, sessions)
    # Data Stripe refuses (stripe-mock checks parameter types as Stripe does): payment
    # terms that are not a number of days.
    bad_terms = good.terms.model_copy(update={"payment_terms_days": "net 30"})
    bad = good.model_copy(update={"terms": bad_terms})
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as refused:
        await env.run(closing.create_stripe_billing, bad)
    assert refused.value.type == STRIPE_REJECTED
    assert refused.value.non_retryable
    assert "days_until_due" in refused.value.message
    steps = await steps_of(sessions, good.deal_id)
    assert steps["stripe.customer"].status == "done"
    assert steps["stripe.invoice"].status == "rejected"
    assert steps["stripe.invoice"].detail["rejections"] == 1

    # Ops fix the data and retry: the customer is not created again, and the refused step
    # goes out under a fresh idempotency key.
    stripe_http.sent.clear()
    result = await env.run(closing.create_stripe_billing, good)
    assert result.status == "invoice_sent"
    assert result.stripe_customer_id == steps["stripe.customer"].external_ref
    assert "/v1/customers" not in [r.path for r in stripe_http.sent]
    assert stripe_http.sent[0].idempotency_key == f"{good.deal_id}.v1.stripe.invoice.retry1"


async def test_a_stripe_connection_error_is_left_to_the_retry_policy(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, state_dir
) -> None:
    input = await closing_input(http, auth, settings, sessions)
    unreachable = ClosingActivities(
        settings=settings,
        sessions=sessions,
        crm=HubSpotCrm.from_settings(settings),
        stripe_client=stripe.StripeClient(
            "sk_test_unreachable",
            base_addresses={"api": f"http://127.0.0.1:{free_port()}"},
            http_client=stripe.HTTPXClient(),
            max_network_retries=0,
        ),
        crash_points=CrashPoints("", state_dir),
    )
    with pytest.raises(stripe.APIConnectionError):
        await ActivityEnvironment().run(unreachable.create_stripe_billing, input)
    assert await steps_of(sessions, input.deal_id) == {}


# --- revenue and commission ------------------------------------------------------------------


async def test_revenue_rows_add_up_to_the_taxable_amount_and_a_second_run_writes_nothing(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, closing: ClosingActivities
) -> None:
    input = await closing_input(http, auth, settings, sessions, term_months=14, discount_pct="7")
    input = input.model_copy(update={"close_date": dt.date(2027, 1, 31)})
    env = ActivityEnvironment()
    first = await env.run(closing.record_revenue_and_commission, input)
    assert await env.run(closing.record_revenue_and_commission, input) == first

    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(RevenueScheduleRow)
                .where(RevenueScheduleRow.deal_id == input.deal_id)
                .order_by(RevenueScheduleRow.month_index)
            )
        )
        commissions = list(
            await session.scalars(select(Commission).where(Commission.deal_id == input.deal_id))
        )
    assert first.rows == len(rows) == 14
    assert sum(r.amount for r in rows) == input.quote.taxable_amount
    assert rows[0].period_start == dt.date(2027, 1, 31)
    assert rows[0].period_end == dt.date(2027, 2, 27)
    assert rows[1].period_start == dt.date(2027, 2, 28)
    assert rows[-1].period_end == dt.date(2028, 3, 30)

    policy = load_commission_policy(settings.commission_policy_path)
    expected = quantize(input.quote.taxable_amount * policy.rate_pct / 100, "USD")
    assert [(c.amount, c.payable_on, c.rep_email) for c in commissions] == [
        (expected, policy.payable_on, REP)
    ]
    assert first.commission_amount == expected
    assert first.commission_payable_on == policy.payable_on


# --- the webhook ------------------------------------------------------------------------------


def signed(event: dict[str, Any], secret: str, *, at: int | None = None) -> tuple[bytes, dict]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=at)
    return payload.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}


def invoice_paid_event(invoice_id: str, *, subscription: str | None = None) -> dict[str, Any]:
    paid_at = int(time.time())
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": "invoice.paid",
        "created": paid_at,
        "data": {
            "object": {
                "id": invoice_id,
                "object": "invoice",
                "currency": "usd",
                "amount_paid": 4750000,
                "status": "paid",
                "status_transitions": {"paid_at": paid_at},
                "parent": {"subscription_details": {"subscription": subscription}}
                if subscription
                else None,
            }
        },
    }


async def test_the_stripe_webhook_refuses_forged_stale_and_unsigned_events(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    secret = settings.secret("stripe_webhook_secret")
    event = invoice_paid_event("in_whatever")
    forged_body, forged = signed(event, "whsec_not_ours")
    stale_body, stale = signed(event, secret, at=int(time.time()) - 600)
    body, good = signed(event, secret)
    for payload, headers in (
        (forged_body, forged),
        (stale_body, stale),
        (body, {"Content-Type": "application/json"}),
        (body + b" ", good),  # the body changed after signing
    ):
        response = await http.post("/v1/webhooks/stripe", content=payload, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_signature"
    not_json, headers = b"not json", signed(event, secret)[1]
    headers["Stripe-Signature"] = stripe.WebhookSignature.generate_signature_header(
        "not json", secret
    )
    response = await http.post("/v1/webhooks/stripe", content=not_json, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_payload"


async def test_the_stripe_webhook_acknowledges_unknown_invoices_and_other_events(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    secret = settings.secret("stripe_webhook_secret")
    body, headers = signed(invoice_paid_event(f"in_unknown_{uuid.uuid4().hex[:8]}"), secret)
    response = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": True, "matched": False}

    other = {**invoice_paid_event("in_x"), "type": "customer.created"}
    body, headers = signed(other, secret)
    response = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["ignored"] is True


async def test_invoice_paid_signals_the_deals_closure(
    http: httpx.AsyncClient,
    auth,
    settings: Settings,
    sessions,
    closing: ClosingActivities,
    temporal_client: Client,
) -> None:
    input = await closing_input(http, auth, settings, sessions)
    billing = await ActivityEnvironment().run(closing.create_stripe_billing, input)
    assert billing.stripe_invoice_id is not None
    secret = settings.secret("stripe_webhook_secret")
    body, headers = signed(invoice_paid_event(billing.stripe_invoice_id), secret)

    # No closure running for the deal: acknowledged (Stripe must not redeliver), not signalled.
    response = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.json() == {"received": True, "matched": True, "signalled": False}

    # A workflow under the closure's id that no worker runs: the server records the signal in
    # its history, which is what the closure will receive.
    handle = await temporal_client.start_workflow(
        "SignalProbe",
        id=deal_closure_workflow_id(input.deal_id),
        task_queue=f"nobody-polls-{uuid.uuid4().hex[:8]}",
    )
    try:
        response = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
        assert response.status_code == 200
        assert response.json() == {"received": True, "matched": True, "signalled": True}
        signals = [
            e.workflow_execution_signaled_event_attributes
            async for e in handle.fetch_history_events()
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]
        assert [s.signal_name for s in signals] == ["invoice_paid"]
        (paid,) = await DATA_CONVERTER.decode(signals[0].input.payloads, [InvoicePaid])
        assert paid.invoice_id == billing.stripe_invoice_id
        assert paid.amount_paid == Decimal("47500.00")
    finally:
        await handle.terminate("test over")


async def test_a_subscriptions_later_invoice_is_matched_by_its_subscription(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, closing: ClosingActivities
) -> None:
    input = await closing_input(http, auth, settings, sessions, billing_frequency="quarterly")
    billing = await ActivityEnvironment().run(closing.create_stripe_billing, input)
    assert billing.stripe_subscription_id is not None
    later = invoice_paid_event(
        f"in_later_{uuid.uuid4().hex[:8]}", subscription=billing.stripe_subscription_id
    )
    body, headers = signed(later, settings.secret("stripe_webhook_secret"))
    response = await http.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["matched"] is True


async def _crm_deals(settings: Settings) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=settings.crm_api_url) as crm:
        return (await crm.get("/_sandbox/crm/deals")).json()["deals"]


async def test_the_reps_crm_deal_named_by_external_id_is_updated_not_duplicated(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, closing: ClosingActivities
) -> None:
    # The rep's deal, already in the CRM (created there by hand, as a rep does).
    async with httpx.AsyncClient(
        base_url=settings.crm_api_url,
        headers={"Authorization": f"Bearer {settings.secret('crm_api_token')}"},
    ) as crm:
        created = await crm.post(
            "/crm/v3/objects/deals",
            json={"properties": {"dealname": "Acme renewal (rep)", "dealstage": "contractsent"}},
        )
        assert created.status_code == 201, created.text
    crm_id = created.json()["id"]
    input = await closing_input(http, auth, settings, sessions, external_id=crm_id)
    input = input.model_copy(update={"external_id": crm_id})
    deals_before = len(await _crm_deals(settings))

    env = ActivityEnvironment()
    first = await env.run(closing.mark_crm_closed_won, input)
    assert first.crm_deal_id == crm_id
    # A retry after the CRM step's row was lost takes the same path: still that deal.
    async with sessions.begin() as session:
        await session.execute(delete(ClosingStep).where(ClosingStep.deal_id == input.deal_id))
    assert await env.run(closing.mark_crm_closed_won, input) == first

    assert len(await _crm_deals(settings)) == deals_before  # nothing created
    view = (await http.get(f"/_sandbox/crm/deals/{crm_id}")).json()
    deal = view["deal"]
    assert deal["id"] == crm_id
    assert deal["properties"]["dealstage"] == "closedwon"
    assert deal["properties"]["dealflow_deal_id"] == input.deal_id
    assert Decimal(deal["properties"]["amount"]) == input.quote.taxable_amount
    assert [note["id"] for note in view["notes"]] == [first.note_id]
    # Found by our deal id too, and it is the same CRM deal.
    by_ours = (await http.get(f"/_sandbox/crm/deals/{input.deal_id}")).json()
    assert by_ours["deal"]["id"] == crm_id


async def test_an_external_id_the_crm_does_not_know_upserts_one_deal_by_our_id(
    http: httpx.AsyncClient, auth, settings: Settings, sessions, closing: ClosingActivities
) -> None:
    external_id = f"sf-{uuid.uuid4().hex[:10]}"  # an id from another system: not a CRM id
    input = await closing_input(http, auth, settings, sessions, external_id=external_id)
    input = input.model_copy(update={"external_id": external_id})
    deals_before = len(await _crm_deals(settings))

    env = ActivityEnvironment()
    first = await env.run(closing.mark_crm_closed_won, input)
    async with sessions.begin() as session:
        await session.execute(delete(ClosingStep).where(ClosingStep.deal_id == input.deal_id))
    assert await env.run(closing.mark_crm_closed_won, input) == first

    deals = await _crm_deals(settings)
    assert len(deals) == deals_before + 1
    mine = [d for d in deals if d["properties"].get("dealflow_deal_id") == input.deal_id]
    assert [d["id"] for d in mine] == [first.crm_deal_id]
