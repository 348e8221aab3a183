"""The DocuSign sandbox's HTTP side: the OAuth, REST (`/restapi/v2.1`) and control
(`/_sandbox/docusign`) routers, and `install`, which adds them to an app."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from sandbox.docusign.models import (
    DocuSignError,
    OAuthError,
    _bad_body,
    _DocuSignRoute,
    _parse_from_date,
    ds_time,
)
from sandbox.docusign.parsing import _json_body, _text, _truthy
from sandbox.docusign.store import DocuSignStore
from sandbox.docusign.wire import _recipients_json, sandbox_view

# --- routers ----------------------------------------------------------------------------


def _request_base(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def _include(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def create_oauth_router(store: DocuSignStore) -> APIRouter:
    """DocuSign's account server: `/oauth/token` (JWT grant) and `/oauth/userinfo`."""
    router = APIRouter(
        prefix="/oauth", tags=["sandbox: docusign oauth"], route_class=_DocuSignRoute
    )

    @router.post("/token")
    async def token(request: Request) -> JSONResponse:
        """Exchange a JWT assertion for an access token (form-encoded, as the SDK sends)."""
        form = {
            key: values[0]
            for key, values in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        host = request.headers.get("host", "")
        return JSONResponse(store.issue_token(form, oauth_host=host))

    @router.get("/userinfo")
    async def userinfo(request: Request) -> JSONResponse:
        """The token's user and accounts; `base_uri` is where the REST API answers."""
        try:
            access = store.authenticate(request.headers.get("authorization"))
        except DocuSignError as error:
            raise OAuthError(401, "invalid_request", "invalid or expired access token") from error
        return JSONResponse(store.userinfo(access, base_uri=_request_base(request)))

    return router


def create_rest_router(store: DocuSignStore) -> APIRouter:
    """The eSignature REST v2.1 subset under `/restapi/v2.1/accounts/{accountId}`."""
    router = APIRouter(
        prefix="/restapi/v2.1/accounts/{account_id}",
        tags=["sandbox: docusign esignature"],
        route_class=_DocuSignRoute,
    )

    def authorize(request: Request, account_id: str) -> None:
        store.authenticate(request.headers.get("authorization"))
        store.check_account(account_id)

    @router.post("/envelopes", status_code=201)
    async def create_envelope(account_id: str, request: Request) -> JSONResponse:
        """Envelopes::create → EnvelopeSummary; Connect messages follow asynchronously."""
        authorize(request, account_id)
        envelope, deliveries = store.create(await _json_body(request))
        store.deliver_in_background(deliveries)
        return JSONResponse(
            {
                "envelopeId": envelope.envelope_id,
                "uri": f"/envelopes/{envelope.envelope_id}",
                "statusDateTime": ds_time(envelope.status_changed_at),
                "status": envelope.status,
            },
            status_code=201,
        )

    @router.get("/envelopes")
    async def list_status_changes(
        account_id: str,
        request: Request,
        from_date: str | None = None,
        to_date: str | None = None,
        custom_field: str | None = None,
        status: str | None = None,
        envelope_ids: str | None = None,
        include: str | None = None,
        start_position: str | None = None,
        count: str | None = None,
    ) -> JSONResponse:
        """Envelopes::listStatusChanges. Like DocuSign, it needs from_date or envelope_ids."""
        authorize(request, account_id)
        ids = {i.strip() for i in envelope_ids.split(",") if i.strip()} if envelope_ids else None
        if from_date is None and ids is None:
            raise DocuSignError(
                400,
                "INVALID_REQUEST_PARAMETER",
                "The request contained at least one invalid parameter. No value specified "
                "for parameter 'from_date'.",
            )
        field: tuple[str, str] | None = None
        if custom_field is not None:
            name, separator, value = custom_field.partition("=")
            if not separator or not name:
                raise DocuSignError(
                    400, "INVALID_REQUEST_PARAMETER", "custom_field must look like name=value"
                )
            field = (name, value)
        statuses = {s.strip().lower() for s in (status or "").split(",") if s.strip()} - {"any"}
        found = store.envelopes(
            custom_field=field,
            from_date=_parse_from_date(from_date) if from_date else None,
            to_date=_parse_from_date(to_date) if to_date else None,
            statuses=statuses or None,
            envelope_ids=ids,
        )
        start = int(start_position) if start_position and start_position.isdigit() else 0
        limit = int(count) if count and count.isdigit() else len(found)
        page = found[start : start + limit]
        wanted = _include(include)
        data: dict[str, Any] = {
            "resultSetSize": str(len(page)),
            "totalSetSize": str(len(found)),
            "startPosition": str(start),
            "endPosition": str(start + len(page) - 1),
            "nextUri": "",
            "previousUri": "",
        }
        if page:  # DocuSign leaves the key out when nothing matched
            data["envelopes"] = [
                store.wire.envelope(e, include=wanted, connect=False) for e in page
            ]
        return JSONResponse(data)

    @router.get("/envelopes/{envelope_id}")
    async def get_envelope(
        account_id: str, envelope_id: str, request: Request, include: str | None = None
    ) -> JSONResponse:
        """Envelopes::get; `include=recipients,custom_fields,documents` adds those parts."""
        authorize(request, account_id)
        envelope = store.get(envelope_id)
        wanted = _include(include)
        data = store.wire.envelope(envelope, include=wanted, connect=False)
        if "documents" in wanted:
            data["envelopeDocuments"] = store.wire.documents(envelope)
        return JSONResponse(data)

    @router.put("/envelopes/{envelope_id}")
    async def update_envelope(
        account_id: str, envelope_id: str, request: Request, resend_envelope: str | None = None
    ) -> JSONResponse:
        """Envelopes::update: `{"status": "voided", "voidedReason"}`, `{"status": "sent"}`."""
        authorize(request, account_id)
        envelope, deliveries = store.update(
            envelope_id, await _json_body(request), resend=_truthy(resend_envelope)
        )
        store.deliver_in_background(deliveries)
        return JSONResponse({"envelopeId": envelope.envelope_id})

    @router.get("/envelopes/{envelope_id}/recipients")
    async def list_recipients(account_id: str, envelope_id: str, request: Request) -> JSONResponse:
        """EnvelopeRecipients::list with each recipient's status and timestamps."""
        authorize(request, account_id)
        return JSONResponse(_recipients_json(store.get(envelope_id), connect=False))

    @router.put("/envelopes/{envelope_id}/recipients")
    async def update_recipients(
        account_id: str, envelope_id: str, request: Request, resend_envelope: str | None = None
    ) -> JSONResponse:
        """EnvelopeRecipients::update; `resend_envelope=true` records a resend per recipient."""
        authorize(request, account_id)
        results = store.update_recipients(
            envelope_id, await _json_body(request), resend=_truthy(resend_envelope)
        )
        return JSONResponse({"recipientUpdateResults": results})

    @router.get("/envelopes/{envelope_id}/documents")
    async def list_documents(account_id: str, envelope_id: str, request: Request) -> JSONResponse:
        """EnvelopeDocuments::list, with the certificate entry DocuSign adds."""
        authorize(request, account_id)
        envelope = store.get(envelope_id)
        return JSONResponse(
            {
                "envelopeId": envelope.envelope_id,
                "envelopeDocuments": store.wire.documents(envelope),
            }
        )

    @router.get("/envelopes/{envelope_id}/documents/{document_id}")
    async def get_document(
        account_id: str,
        envelope_id: str,
        document_id: str,
        request: Request,
        certificate: str | None = None,
    ) -> Response:
        """The PDF of one document, `combined` (certificate=true appends the certificate),
        or `certificate`."""
        authorize(request, account_id)
        filename, content = store.document(
            envelope_id, document_id, certificate=_truthy(certificate)
        )
        return Response(
            content,
            media_type="application/pdf",
            headers={"Content-Disposition": f'file; filename="{filename}"'},
        )

    return router


def create_control_router(store: DocuSignStore) -> APIRouter:
    """The control API: act as the signers, look at envelopes, steer Connect."""
    router = APIRouter(
        prefix="/_sandbox/docusign", tags=["sandbox: docusign"], route_class=_DocuSignRoute
    )

    @router.post("/envelopes/{envelope_id}/recipients/{email}/{action}")
    async def act(envelope_id: str, email: str, action: str, request: Request) -> JSONResponse:
        """view | sign | decline (`{"reason"?}`); returns the envelope and the Connect
        deliveries this caused, already attempted, so a caller can assert on both."""
        body = await _json_body(request)
        envelope, deliveries = store.act(
            envelope_id, email, action, reason=_text(body.get("reason"))
        )
        sent = await store.deliver(deliveries)
        return JSONResponse(
            {
                "envelope": sandbox_view(store.get(envelope.envelope_id)),
                "deliveries": [d.view() for d in sent],
            }
        )

    @router.get("/envelopes")
    async def list_envelopes(
        custom_field: str | None = None, status: str | None = None
    ) -> JSONResponse:
        """Every envelope, oldest first; `custom_field=name=value` and `status` filter."""
        field: tuple[str, str] | None = None
        if custom_field is not None:
            name, _, value = custom_field.partition("=")
            field = (name, value)
        statuses = {s.strip() for s in (status or "").split(",") if s.strip()}
        found = store.envelopes(custom_field=field, statuses=statuses or None)
        return JSONResponse({"envelopes": [sandbox_view(e) for e in found]})

    @router.get("/envelopes/{envelope_id}")
    async def get_envelope(envelope_id: str) -> JSONResponse:
        """One envelope with its recipients, and the Connect deliveries it caused."""
        view = sandbox_view(store.get(envelope_id))
        view["deliveries"] = [d.view() for d in store.deliveries(envelope_id=envelope_id)]
        return JSONResponse(view)

    @router.get("/connect")
    async def connect_config() -> JSONResponse:
        """Where Connect messages go and how many will be dropped."""
        return JSONResponse(
            {
                "url": store.connect_url,
                "hmac": store.hmac_key is not None,
                "drop_remaining": store.drop_remaining,
            }
        )

    @router.put("/connect")
    async def set_connect(request: Request) -> JSONResponse:
        """`{"url"?, "hmac_key"?}`: point Connect at a service that started after the sandbox.

        Kept in memory only: after a restart, `install`'s options apply again.
        """
        body = await _json_body(request)
        if "url" in body:
            store.connect_url = _text(body["url"]) or None
        if "hmac_key" in body:
            store.hmac_key = _text(body["hmac_key"]) or None
        return await connect_config()

    @router.get("/connect/deliveries")
    async def list_deliveries(
        envelope_id: str | None = None, event: str | None = None
    ) -> JSONResponse:
        """The Connect delivery log, oldest first."""
        return JSONResponse(
            {
                "deliveries": [
                    d.view() for d in store.deliveries(envelope_id=envelope_id, event=event)
                ]
            }
        )

    @router.post("/connect/drop")
    async def drop(request: Request) -> JSONResponse:
        """`{"count": N}`: drop the next N Connect messages (to exercise polling fallbacks)."""
        body = await _json_body(request)
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _bad_body("count must be a non-negative integer")
        return JSONResponse({"drop_remaining": store.drop_next(count)})

    @router.post("/connect/redeliver/{delivery_id}")
    async def redeliver(delivery_id: str) -> JSONResponse:
        """Send one logged message again, identical body and signature (a duplicate)."""
        return JSONResponse((await store.redeliver(delivery_id)).view())

    return router


def install(
    app: FastAPI,
    state_dir: Path,
    *,
    connect_url: str | None = None,
    hmac_key: str | None = None,
    **options: Any,
) -> DocuSignStore:
    """Add the DocuSign sandbox (OAuth, REST, control API) to `app`; return its store.

    `options` go to `DocuSignStore` (account_id, user_id, base_uri, jwt_public_keys,
    jwt_audiences, token_lifetime, connect_include_data, connect_events, ...). Serve `app`
    over HTTPS too (see the module docstring) for the SDK's OAuth calls.
    """
    store = DocuSignStore(Path(state_dir), connect_url=connect_url, hmac_key=hmac_key, **options)
    app.include_router(create_oauth_router(store))
    app.include_router(create_rest_router(store))
    app.include_router(create_control_router(store))
    return store
