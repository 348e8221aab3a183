"""Authentication, bad input, idempotency and operations endpoints, through real HTTP."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from api.app import create_app
from db.models import Deal
from dealflow.settings import Settings
from tests.utils.deals import FINANCE, OPS, REP, deal_payload


async def _deal_count(sessions) -> int:
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Deal)))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-key"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "wrong-scheme"],
)
async def test_missing_or_unknown_key_is_401_with_the_error_body(http, headers):
    resp = await http.post("/v1/deals", json=deal_payload(), headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert set(resp.json()["error"]) == {"code", "message", "details"}


async def test_known_key_without_the_rep_role_is_403(http, auth):
    resp = await http.post("/v1/deals", json=deal_payload(), headers=auth(FINANCE))
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"currency": "usd"}, "currency"),
        ({"discount_pct": "150"}, "discount_pct"),
        ({"term_months": 0}, "term_months"),
        ({"billing_frequency": "weekly"}, "billing_frequency"),
        ({"discount_percent": "5"}, "discount_percent"),
        (
            {"line_items": [{"sku": "A", "description": "", "quantity": "1", "unit_price": "-1"}]},
            "line_items.0.unit_price",
        ),
        (
            {"line_items": [{"sku": "A", "description": "", "quantity": "0", "unit_price": "1"}]},
            "line_items.0.quantity",
        ),
        (
            {"signers": [{"name": "X", "email": "not-an-email", "routing_order": 1}]},
            "signers.0.email",
        ),
        ({"account": {"country": "Germany"}}, "account.country"),
        (
            {"line_items": [{"sku": "A", "description": "", "quantity": "1", "unit_price": "NaN"}]},
            "line_items.0.unit_price",
        ),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_writes_nothing(
    http, auth, sessions, change, field
):
    before = await _deal_count(sessions)
    body = deal_payload(**change)
    resp = await http.post("/v1/deals", json=body, headers=auth(REP))
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["code"] == "invalid_request"
    assert field in {d["field"] for d in err["details"]}
    assert await _deal_count(sessions) == before


async def test_malformed_json_is_400(http, auth, sessions):
    before = await _deal_count(sessions)
    resp = await http.post(
        "/v1/deals",
        content=b'{"name": ',
        headers={**auth(REP), "Content-Type": "application/json"},
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_json"
    assert await _deal_count(sessions) == before


async def test_unknown_deal_is_404_and_unknown_path_uses_the_error_body(http, auth):
    resp = await http.get("/v1/deals/deal_doesnotexist", headers=auth(REP))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    resp = await http.get("/v1/nothing-here", headers=auth(REP))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


async def test_same_idempotency_key_and_body_returns_the_first_deal(http, auth, sessions):
    headers = {**auth(REP), "Idempotency-Key": "create-acme-2027"}
    before = await _deal_count(sessions)
    first = await http.post("/v1/deals", json=deal_payload(), headers=headers)
    second = await http.post("/v1/deals", json=deal_payload(), headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json()["id"] == first.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await _deal_count(sessions) == before + 1

    other = await http.post("/v1/deals", json=deal_payload(name="Different"), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await _deal_count(sessions) == before + 1


async def test_duplicate_external_id_is_409(http, auth):
    body = deal_payload(external_id="crm-123-unique")
    assert (await http.post("/v1/deals", json=body, headers=auth(REP))).status_code == 201
    resp = await http.post("/v1/deals", json=body, headers=auth(REP))
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "duplicate_external_id"


async def test_every_sandbox_person_key_authenticates(http, api_keys):
    config = (await http.get("/_sandbox/config")).json()
    people = {p["email"]: p for p in config["people"]}
    assert set(people) == set(api_keys)
    assert set(config["secrets"]) == {
        "slack_signing_secret",
        "docusign_connect_hmac_key",
        "stripe_webhook_secret",
        "mail_webhook_secret",
    }
    for email, person in people.items():
        resp = await http.get(
            "/v1/deals/deal_missing", headers={"Authorization": f"Bearer {person['api_key']}"}
        )
        assert resp.status_code == 404, email  # authenticated; the deal just does not exist


async def test_health_readiness_metrics_and_openapi(http, auth):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
    await http.get("/v1/deals/deal_x", headers=auth(OPS))
    metrics = (await http.get("/metrics")).text
    assert (
        'dealflow_http_requests_total{method="GET",route="/v1/deals/{deal_id}",status="404"}'
        in (metrics)
    )
    spec = (await http.get("/openapi.json")).json()
    for path in ("/v1/deals", "/v1/deals/{deal_id}", "/v1/deals/{deal_id}/ready-to-close"):
        assert path in spec["paths"]
    assert (await http.get("/docs")).status_code == 200


async def test_production_profile_refuses_placeholder_secrets(monkeypatch):
    monkeypatch.setenv("DEALFLOW_PROFILE", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db/dealflow")
    for name, value in {
        "SLACK_BOT_TOKEN": "xoxb-7261937-4418290113-Qm3vX9kTzR2bLw8yNc5dHf1J",
        "SLACK_SIGNING_SECRET": "8f14e45fceea167a5a36dedd4bea2543",
        "DOCUSIGN_CONNECT_HMAC_KEY": "c9f0f895fb98ab9159f51fd0297e236d",
        "STRIPE_API_KEY": "sk_live_51HxYzQ8vN2kLm4Rt7Wp9Xc3Bd6Fg1Hj5Ks0",
        "STRIPE_WEBHOOK_SECRET": "whsec_45c48cce2e2d7fbdea1afc51c7c6ad26",
        "MAIL_WEBHOOK_SECRET": "d3d9446802a44259755d38e6d163e820",
        "LINK_SIGNING_KEY": "6512bd43d9caa6e02c990b0a82652dca",
        "CRM_API_TOKEN": "pat-na1-3f2a9c1e-7b6d-4e11-9a0c-5d8e2f4b1a77",
        "DOCUSIGN_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqh\n-----END",
    }.items():
        monkeypatch.setenv(f"DEALFLOW_{name}", value)
    assert Settings().profile == "production"

    monkeypatch.setenv("DEALFLOW_STRIPE_WEBHOOK_SECRET", "changeme")
    with pytest.raises(ValidationError, match="DEALFLOW_STRIPE_WEBHOOK_SECRET"):
        Settings()
    monkeypatch.delenv("DEALFLOW_STRIPE_WEBHOOK_SECRET")
    with pytest.raises(ValidationError, match="DEALFLOW_STRIPE_WEBHOOK_SECRET must be set"):
        Settings()


async def test_production_profile_answers_404_on_every_sandbox_path(
    monkeypatch, engine, temporal_client
):
    settings = Settings.model_construct(**{**Settings().model_dump(), "profile": "production"})
    app = create_app(settings, engine=engine, temporal=temporal_client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for path in ("/_sandbox/config", "/_sandbox/mail/messages", "/_sandbox/anything"):
                resp = await client.get(path)
                assert resp.status_code == 404, path
                assert resp.json()["error"]["code"] == "not_found"
