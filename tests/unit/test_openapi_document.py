"""The published OpenAPI document, built without servers: the rules of ``api/openapi.py`` hold.

The live check (every real response conforms) is ``tests/integration/test_openapi_contract.py``;
this one pins the document's shape, fast, and that the exceptions table names real operations.
"""

from __future__ import annotations

import pytest

from api.app import create_app
from api.openapi import OPERATIONS
from dealflow.settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(scope="module")
def document() -> dict:
    return create_app(Settings(profile="sandbox")).openapi()


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_every_error_response_is_the_error_body(document):
    for method, path, op in _operations(document):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            content = response["content"]
            assert content, (method, path, code)
            if "application/json" in content:
                assert content["application/json"]["schema"] == ERROR_REF, (method, path, code)
    # FastAPI's default 422 body is not what our handler sends: it is gone from the document.
    assert "HTTPValidationError" not in document["components"]["schemas"]
    info = document["components"]["schemas"]["ErrorInfo"]
    assert set(info["required"]) == {"code", "message", "details"}


def test_errors_follow_from_dependencies(document):
    ops = {(m, p): op for m, p, op in _operations(document)}
    deal = ops[("GET", "/v1/deals/{deal_id}")]
    # API key -> 401/403 and the security scheme; path parameter -> 404; Temporal -> 503.
    assert {"200", "401", "403", "404", "422", "503"} <= set(deal["responses"])
    assert deal["security"] == [{"ApiKey": []}]
    # A JSON body -> 400 (not JSON) and 413 (too large); a create with a rule -> 409.
    assert {"201", "400", "401", "403", "409", "413", "422"} <= set(
        ops[("POST", "/v1/deals")]["responses"]
    )
    # Webhooks authenticate by signature: 401, never 403; Stripe's convention is 400.
    assert {"400", "401"} <= set(ops[("POST", "/v1/webhooks/docusign")]["responses"])
    assert "403" not in ops[("POST", "/v1/webhooks/docusign")]["responses"]
    assert "401" not in ops[("POST", "/v1/webhooks/stripe")]["responses"]
    assert "security" not in ops[("GET", "/healthz")] and "401" not in ops[("GET", "/healthz")]


def test_success_codes_and_media_types_are_the_sent_ones(document):
    ops = {(m, p): op for m, p, op in _operations(document)}
    ready = ops[("POST", "/v1/deals/{deal_id}/ready-to-close")]["responses"]
    assert ready["202"]["content"] == ready["200"]["content"]  # the repeat call answers 200
    assert set(ops[("GET", "/metrics")]["responses"]["200"]["content"]) == {"text/plain"}
    assert set(ops[("GET", "/v1/documents/{document_id}")]["responses"]["200"]["content"]) == {
        "application/pdf",
        "text/html",
    }
    link = ops[("GET", "/v1/approvals/links/{token}")]["responses"]
    assert set(link["200"]["content"]) == set(link["404"]["content"]) == {"text/html"}
    assert set(ops[("GET", "/v1/unsubscribe/{token}")]["responses"]["200"]["content"]) == {
        "text/html"
    }


def test_routes_answering_dicts_document_their_body(document):
    ops = {(m, p): op for m, p, op in _operations(document)}
    audit = ops[("GET", "/v1/deals/{deal_id}/audit")]["responses"]["200"]["content"]
    assert audit["application/json"]["schema"] == {"$ref": "#/components/schemas/AuditTrail"}
    link = ops[("POST", "/v1/approvals/links/{token}")]["responses"]["200"]["content"]
    assert link["application/json"]["schema"] == {"$ref": "#/components/schemas/LinkOutcome"}
    assert "text/html" in link
    # Open: a route may add a field without breaking the contract.
    assert document["components"]["schemas"]["AuditTrail"]["additionalProperties"] is True


def test_operation_ids_are_unique(document):
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))


def test_the_exceptions_table_names_real_operations(document):
    real = {(m, p) for m, p, _ in _operations(document)}
    assert set(OPERATIONS) <= real, set(OPERATIONS) - real
