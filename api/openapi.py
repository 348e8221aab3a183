"""The published OpenAPI document: every operation's error responses, from what it depends on.

FastAPI documents the success response and its own 422. What an operation can refuse follows
from what it depends on, so it is added here, centrally, rather than on every route:

- the caller's API key (``get_current_person``): 401 (missing or unknown key), 403 (wrong role
  or not the owner), and the bearer security scheme;
- a path parameter: 404 (no such deal, campaign, step, link...);
- a path or query parameter: 400 (a NUL character, refused before any route runs);
- any parameter or body: 422 (validation; our handler answers with ``ErrorResponse``, so it
  replaces FastAPI's ``HTTPValidationError``);
- a request body: 400 (not JSON, malformed multipart); any POST, PUT or PATCH: 413 (too large);
- an ``Idempotency-Key`` header: 400 (a key of the wrong length);
- the Temporal client (``get_temporal``): 503 (Temporal cannot be reached now; retry);
- an authenticated change (POST, PUT, PATCH, DELETE) to a resource named in the path: 409
  (its state does not allow it now: a locked deal, an ended closure, a decided step...);
- a webhook (``/v1/webhooks/``): 400 (not the provider's payload), 401 (signature), 413.

What no dependency tells (a create's 409, a second success code, a page instead of JSON, the
body of a route that answers a plain dict) is in ``OPERATIONS`` below. A new route that can
answer a code the rules do not give declares it on its decorator,
``responses={409: {"description": "..."}}``: every error response without a body schema gets
``ErrorResponse`` here.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, routing
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api import responses as bodies
from api.deps import get_current_person, get_temporal
from api.errors import ErrorResponse
from api.idempotency import MAX_KEY_LENGTH

JSON = "application/json"
HTML = "text/html"
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
HTML_PAGE: dict[str, Any] = {"schema": {"type": "string"}}
BEARER = "ApiKey"
# Answered by the middleware or validation before the route runs (a NUL in the path, a body too
# large or not JSON, invalid parameters), so JSON even where the route itself answers a page.
BEFORE_THE_ROUTE = frozenset({400, 413, 422})

DESCRIPTIONS = {
    400: "Malformed request (not JSON, bad header, not the provider's payload).",
    401: "No valid credentials (API key, or the webhook's signature).",
    403: "Authenticated, but this caller may not do this.",
    404: "No such resource.",
    409: "The resource's state does not allow this now.",
    413: "The request body is too large.",
    422: "The request is not valid; see details.",
    503: "A dependency (Temporal) is unavailable now; retry later.",
}


@dataclass(frozen=True)
class Operation:
    """What the rules cannot see about one operation (method and path template)."""

    errors: frozenset[int] = frozenset()  # codes beyond the rules
    not_errors: frozenset[int] = frozenset()  # codes the rules give that it never sends
    error_media: tuple[str, ...] = (JSON,)  # error bodies: JSON, or also an HTML page
    # Success codes and their media types beyond the one FastAPI documents; a code already
    # documented gets these media types instead. An empty tuple: the documented content.
    success: dict[int, tuple[str, ...]] = field(default_factory=dict)
    # The JSON body of the route's own success code, for routes that answer a plain dict.
    body: type[BaseModel] | None = None


_PAGE_OR_JSON = (JSON, HTML)
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation(body=bodies.Health),
    ("GET", "/readyz"): Operation(errors=frozenset({503}), body=bodies.Readiness),
    ("GET", "/metrics"): Operation(success={200: ("text/plain",)}),
    ("POST", "/v1/deals"): Operation(errors=frozenset({409})),  # duplicate external_id
    # 202 when it starts the closure, 200 with the same workflow when one already runs.
    ("POST", "/v1/deals/{deal_id}/ready-to-close"): Operation(success={200: ()}),
    ("GET", "/v1/deals/{deal_id}/audit"): Operation(body=bodies.AuditTrail),
    ("GET", "/v1/documents/{document_id}"): Operation(success={200: ("application/pdf", HTML)}),
    # The link page answers its refusals (expired 403, unknown 404, used 409) as a page too.
    ("GET", "/v1/approvals/links/{token}"): Operation(
        errors=frozenset({403, 409}), error_media=(HTML,)
    ),
    # A form post gets a page back, a JSON client JSON, whether it is recorded or refused.
    ("POST", "/v1/approvals/links/{token}"): Operation(
        errors=frozenset({403, 409, 413, 422}),  # 422 raised by the route, in JSON
        error_media=_PAGE_OR_JSON,
        success={200: _PAGE_OR_JSON},
        body=bodies.LinkOutcome,
    ),
    ("PUT", "/v1/approvers/{email}/out-of-office"): Operation(
        not_errors=frozenset({409}), body=bodies.OutOfOfficeRead
    ),
    ("POST", "/v1/deals/{deal_id}/signature/offline"): Operation(
        body=bodies.OfflineSignatureAccepted
    ),
    ("POST", "/v1/deals/{deal_id}/closing/retry"): Operation(body=bodies.RetryRequested),
    ("POST", "/v1/campaigns/{campaign_id}/contacts/{email}/tasks/{step}/done"): Operation(
        body=bodies.TaskDoneRead
    ),
    ("POST", "/v1/suppressions"): Operation(body=bodies.SuppressionRead),
    ("POST", "/v1/webhooks/slack/interactions"): Operation(body=bodies.SlackAnswer),
    ("POST", "/v1/webhooks/docusign"): Operation(body=bodies.WebhookReceived),
    # Stripe's signature failures are 400 (Stripe's convention), never 401.
    ("POST", "/v1/webhooks/stripe"): Operation(
        not_errors=frozenset({401}), body=bodies.WebhookReceived
    ),
    ("POST", "/v1/webhooks/email/inbound"): Operation(
        errors=frozenset({422}), body=bodies.InboundRead
    ),
    ("POST", "/v1/webhooks/email/events"): Operation(
        errors=frozenset({422}), body=bodies.DeliveryEventRead
    ),
    # The footer link's page and its button answer with pages (an unknown link too); the RFC
    # 8058 one-click POST answers JSON.
    ("GET", "/v1/unsubscribe/{token}"): Operation(
        success={200: (HTML,)}, error_media=_PAGE_OR_JSON
    ),
    ("POST", "/v1/unsubscribe/{token}"): Operation(
        success={200: _PAGE_OR_JSON}, error_media=_PAGE_OR_JSON, body=bodies.Unsubscribed
    ),
}


def error_codes(route: APIRoute, method: str) -> set[int]:
    """The error statuses one operation can answer, from its dependencies and ``OPERATIONS``."""
    parts = list(_walk(route.dependant))
    calls = {d.call for d in parts}
    path = [p for d in parts for p in d.path_params]
    query = [p for d in parts for p in d.query_params]
    headers = [p for d in parts for p in d.header_params]
    body = any(d.body_params for d in parts)
    codes: set[int] = set()
    if get_current_person in calls:
        codes |= {401, 403}
    if path:
        codes.add(404)
    if path or query:
        codes.add(400)  # a NUL character in the path or query: no route can use it
    if body or path or query or headers:
        codes.add(422)
    if body:
        codes.add(400)
    if body or method in ("POST", "PUT", "PATCH"):
        codes.add(413)  # the request-size limit holds for every body, declared or read raw
    if any(p.alias.lower() == "idempotency-key" for p in headers):
        codes.add(400)
    if get_temporal in calls:
        codes.add(503)
    if path and method in ("POST", "PUT", "PATCH", "DELETE") and get_current_person in calls:
        codes.add(409)  # a change to an existing resource: its state may not allow it now
    if route.path_format.startswith("/v1/webhooks/"):
        codes |= {400, 401, 413}
    extra = OPERATIONS.get((method, route.path_format), Operation())
    return (codes | extra.errors) - extra.not_errors


def _walk(dependant: Dependant) -> Any:
    """The route's dependant and every sub-dependency, depth first."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)


def _calls(route: APIRoute) -> set[Any]:
    return {d.call for d in _walk(route.dependant)}


def _operation_id(route: APIRoute, method: str) -> str:
    # FastAPI's own scheme, with this operation's method (it takes the route's first method,
    # so a GET+POST route would publish one id twice).
    return re.sub(r"\W", "_", f"{route.name}{route.path_format}") + f"_{method.lower()}"


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's ``APIRoute``s, also through included routers (FastAPI >= 0.120 nests them)."""
    if hasattr(routing, "iter_route_contexts"):
        routes = [ctx.original_route for ctx in routing.iter_route_contexts(routes)]
    return [r for r in routes if isinstance(r, APIRoute) and r.include_in_schema]


def document_errors(schema: dict[str, Any], routes: list[Any]) -> None:
    """Add each operation's error responses (and the exceptions above) to ``schema``."""
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`.",
    }
    for route in api_routes(routes):
        for method in sorted(route.methods):
            op = schema["paths"].get(route.path_format, {}).get(method.lower())
            if op is None:
                continue
            op["operationId"] = _operation_id(route, method)
            _state_header_constraints(op)
            extra = OPERATIONS.get((method, route.path_format), Operation())
            responses = op.setdefault("responses", {})
            if get_current_person in _calls(route):
                op["security"] = [{BEARER: []}]
            for code in sorted(error_codes(route, method)):
                entry = responses.setdefault(str(code), {})
                entry.setdefault("description", DESCRIPTIONS.get(code, "Error."))
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                if "content" in response and "HTTPValidationError" not in repr(response):
                    continue  # the route documented this body itself
                # FastAPI's 422 says HTTPValidationError; ours answers with ErrorResponse.
                response["content"] = {
                    media: ({"schema": ERROR_REF} if media == JSON else HTML_PAGE)
                    for media in extra.error_media
                }
                if int(code) in BEFORE_THE_ROUTE:
                    # Refused before any page could be rendered: always the JSON error body.
                    response["content"] = {JSON: {"schema": ERROR_REF}}
            for code, media_types in extra.success.items():
                documented = next(
                    (r for c, r in sorted(responses.items()) if c.startswith("2")), {}
                )
                entry = responses.setdefault(
                    str(code), {"description": "Successful Response", **copy.deepcopy(documented)}
                )
                if media_types:
                    old = entry.get("content", {}).get(JSON, {})
                    entry["content"] = {
                        m: (old if m == JSON and old else _media_schema(m)) for m in media_types
                    }
            if extra.body is not None:
                own = responses[str(route.status_code or 200)].setdefault("content", {})
                own.setdefault(JSON, {})["schema"] = _component(schemas, extra.body)
            op["responses"] = dict(sorted(responses.items()))
    _drop_unused(schemas, schema, ("HTTPValidationError", "ValidationError"))


def _component(schemas: dict[str, Any], model: type[BaseModel]) -> dict[str, str]:
    """Put ``model`` (and the models it uses) in the components; a reference to it."""
    found = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(found.pop("$defs", {}))
    schemas[model.__name__] = found
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _state_header_constraints(op: dict[str, Any]) -> None:
    """Constraints the API enforces on a header by hand (400, not 422), stated in the schema."""
    for param in op.get("parameters", []):
        if param.get("in") == "header" and param.get("name", "").lower() == "idempotency-key":
            schema = param.setdefault("schema", {})
            for option in schema.get("anyOf", [schema]):
                if option.get("type") == "string":
                    option.update(minLength=1, maxLength=MAX_KEY_LENGTH)
            param.setdefault(
                "description",
                f"Same key and body: the first response again (1 to {MAX_KEY_LENGTH} "
                "characters; otherwise 400).",
            )


def _media_schema(media: str) -> dict[str, Any]:
    if media == "application/pdf":
        return {"schema": {"type": "string", "format": "binary"}}
    if media == JSON:
        return {"schema": {}}
    return {"schema": {"type": "string"}}


def _drop_unused(schemas: dict[str, Any], schema: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        rest = {k: v for k, v in schema.items() if k != "components"}
        others = {k: v for k, v in schemas.items() if k != name}
        if f"#/components/schemas/{name}" not in repr((rest, others)):
            schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """Serve the document above at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                # The duplicate ids FastAPI warns about (GET+POST routes) are fixed just below.
                warnings.filterwarnings("ignore", message="Duplicate Operation ID")
                schema = get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            document_errors(schema, app.routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
