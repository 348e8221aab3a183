"""The DocuSign sandbox, driven the way dealflow drives DocuSign: through docusign-esign.

The SDK does the JWT grant over real TLS (it hardcodes https for OAuth) against a uvicorn
server using the sandbox's self-signed certificate, then calls the REST API; its own model
deserialisation is the check that the sandbox's JSON has DocuSign's shape. Connect messages
go to a real HTTP receiver, which verifies the HMAC and checks each message against a JSON
Schema derived from DocuSign's published Connect message (docusign-connect.schema-v2.json).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from docusign_esign import ApiClient, ApiException, Configuration, EnvelopesApi
from docusign_esign.client.api_response import RESTClientObject
from docusign_esign.models import (
    CustomFields,
    Document,
    Envelope,
    EnvelopeDefinition,
    EnvelopeDocumentsResult,
    EnvelopesInformation,
    EnvelopeSummary,
    Recipients,
    RecipientsUpdateSummary,
    Signer,
    TextCustomField,
)
from fastapi import FastAPI, Request, Response

from sandbox.docusign.routes import install
from sandbox.docusign.store import DocuSignStore
from sandbox.docusign.wire import minimal_pdf
from sandbox.tls import TlsFiles, ensure_self_signed_cert

HMAC_KEY = "test-connect-hmac-key"
INTEGRATION_KEY = "dealflow-sandbox-integration-key"
USER_ID = "7c0e3a8e-1111-4d2b-9d5e-0000000000aa"
DEALFLOW_KEY = "deal_x.v1"
SIGNER_1 = ("Ada Lovelace", "ada@customer.example")
SIGNER_2 = ("Grace Hopper", "grace@dealflow.example")
CONNECT_SCHEMA = Path(
    os.environ.get(
        "DEALFLOW_DOCUSIGN_CONNECT_SCHEMA",
        "/work/shared/data/specs/docusign-connect.schema-v2.json",
    )
)
_READY_POLL_INTERVAL = 0.01  # how often to look at uvicorn's `started`; the deadline bounds it


# --- servers ----------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers, which would take over pytest's Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI, *, tls: TlsFiles | None = None) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port (HTTPS with `tls`) until the block exits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.cert_path) if tls else None,
        ssl_keyfile=str(tls.key_path) if tls else None,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped while starting")
        assert loop.time() < deadline, "uvicorn did not start"
        await asyncio.sleep(_READY_POLL_INTERVAL)
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The service's side of Connect: records every POST, wakes waiters on each."""

    url: str = ""
    messages: list[Received] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` messages, waiting for them to arrive (bounded by `timeout`)."""
        async with asyncio.timeout(timeout):
            async with self.changed:
                await self.changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages[:count]

    def events(self) -> list[str]:
        return [m.message["event"] for m in self.messages]


def _receiver_app(receiver: Receiver) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/webhooks/docusign")
    async def connect(request: Request) -> Response:
        body = await request.body()
        async with receiver.changed:
            receiver.messages.append(Received(dict(request.headers), body))
            receiver.changed.notify_all()
        return Response(status_code=200)

    return app


@dataclass
class Sandbox:
    store: DocuSignStore
    https_url: str
    http_url: str
    tls: TlsFiles
    state_dir: Path
    clients: list[ApiClient] = field(default_factory=list)

    def close_clients(self) -> None:
        """Really close the SDK's keep-alive connections before the server stops.

        Otherwise uvicorn's shutdown waits on each open TLS connection for the client's
        close_notify, up to asyncio's 30-second SSL shutdown timeout. Clearing the pool is
        not enough: a socket's descriptor stays open while any urllib3 response still
        refers to it, and ApiClient keeps `last_response` (as does every ApiException, via
        its traceback's frames until the cycle is collected).
        """
        for client in self.clients:
            client.rest_client.pool_manager.clear()
            client.last_response = None
        gc.collect()

    @property
    def oauth_host(self) -> str:
        return self.https_url.removeprefix("https://")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serve(_receiver_app(receiver)) as url:
        receiver.url = f"{url}/v1/webhooks/docusign"
        yield receiver


@contextlib.asynccontextmanager
async def running_sandbox(state_dir: Path, connect_url: str) -> AsyncIterator[Sandbox]:
    """The sandbox app served twice, as the sandbox process does: HTTPS and plain HTTP."""
    app = FastAPI()
    store = install(app, state_dir, connect_url=connect_url, hmac_key=HMAC_KEY)
    tls = ensure_self_signed_cert(state_dir)
    async with serve(app, tls=tls) as https_url, serve(app) as http_url:
        running = Sandbox(store, https_url, http_url, tls, state_dir)
        try:
            yield running
            await store.wait_for_deliveries()
        finally:
            running.close_clients()


@pytest.fixture
async def sandbox(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Sandbox]:
    async with running_sandbox(tmp_path / "sandbox", receiver.url) as running:
        yield running


# --- the SDK side -----------------------------------------------------------------------


def _rsa_private_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


PRIVATE_KEY = _rsa_private_key_pem()


@dataclass
class Client:
    api_client: ApiClient
    envelopes: EnvelopesApi
    account_id: str
    access_token: str


def connect_sdk(sandbox: Sandbox) -> Client:
    """The recipe in the sandbox.docusign package's docstring, step by step (blocking)."""
    api_client = ApiClient(oauth_host_name=sandbox.oauth_host)
    configuration = Configuration()
    configuration.ssl_ca_cert = str(sandbox.tls.cert_path)
    api_client.rest_client = RESTClientObject(configuration=configuration)
    sandbox.clients.append(api_client)
    token = api_client.request_jwt_user_token(
        client_id=INTEGRATION_KEY,
        user_id=USER_ID,
        oauth_host_name=sandbox.oauth_host,
        private_key_bytes=PRIVATE_KEY,
        expires_in=3600,
        scopes=["signature", "impersonation"],
    )
    assert token.token_type == "Bearer" and token.access_token
    info = api_client.get_user_info(token.access_token)
    assert info.sub == USER_ID
    account = info.accounts[0]
    assert account.base_uri == sandbox.https_url
    api_client.host = account.base_uri + "/restapi"
    return Client(api_client, EnvelopesApi(api_client), account.account_id, token.access_token)


CONTRACT_PDF = minimal_pdf([["Master Subscription Agreement", "Acme Corp x Dealflow"]])


def envelope_definition(key: str = DEALFLOW_KEY, *, status: str = "sent") -> EnvelopeDefinition:
    return EnvelopeDefinition(
        email_subject="Please sign: Acme Corp order form",
        documents=[
            Document(
                document_base64=base64.b64encode(CONTRACT_PDF).decode(),
                name="Order form",
                file_extension="pdf",
                document_id="1",
            )
        ],
        recipients=Recipients(
            signers=[
                Signer(email=SIGNER_1[1], name=SIGNER_1[0], recipient_id="1", routing_order="1"),
                Signer(email=SIGNER_2[1], name=SIGNER_2[0], recipient_id="2", routing_order="2"),
            ]
        ),
        custom_fields=CustomFields(
            text_custom_fields=[TextCustomField(name="dealflow_key", value=key, show="false")]
        ),
        status=status,
    )


def create_envelope(client: Client, key: str = DEALFLOW_KEY) -> str:
    summary = client.envelopes.create_envelope(
        client.account_id, envelope_definition=envelope_definition(key)
    )
    assert isinstance(summary, EnvelopeSummary)
    return summary.envelope_id


async def control(
    sandbox: Sandbox, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """POST to the control API (an action); `control_get` reads."""
    async with httpx.AsyncClient(base_url=sandbox.http_url, trust_env=False) as http:
        return await http.post(f"/_sandbox/docusign{path}", json=body or {})


async def control_get(sandbox: Sandbox, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sandbox.http_url, trust_env=False) as http:
        return await http.get(f"/_sandbox/docusign{path}")


def _error(exception: ApiException) -> dict[str, Any]:
    return json.loads(exception.body)


# --- Connect checks ---------------------------------------------------------------------


def schema_from_sample(sample: Any) -> dict[str, Any]:
    """A JSON Schema that admits exactly the fields (and JSON types) of DocuSign's sample.

    The published file is a sample message with every field filled in, not a schema; an
    object schema with `additionalProperties: false` built from it catches a misspelt or
    invented field and a wrongly typed one (DocuSign sends almost everything as strings).
    Empty objects in the sample are open, since their fields are not listed.
    """
    if isinstance(sample, dict):
        if not sample:
            return {"type": "object"}
        return {
            "type": "object",
            "properties": {key: schema_from_sample(value) for key, value in sample.items()},
            "additionalProperties": False,
        }
    if isinstance(sample, list):
        if not sample:
            return {"type": "array"}
        items = schema_from_sample(sample[0])
        for item in sample[1:]:
            items = _merge(items, schema_from_sample(item))
        return {"type": "array", "items": items}
    if isinstance(sample, bool):
        return {"type": "boolean"}
    if isinstance(sample, int):
        return {"type": "integer"}
    if isinstance(sample, float):
        return {"type": "number"}
    return {"type": "string"}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Union of two sample-derived schemas (array items in the sample differ in fields)."""
    if a.get("type") == b.get("type") == "object" and "properties" in a and "properties" in b:
        properties = dict(a["properties"])
        for key, value in b["properties"].items():
            properties[key] = _merge(properties[key], value) if key in properties else value
        return {**a, "properties": properties}
    return a if a == b else {"anyOf": [a, b]}


def connect_schema() -> dict[str, Any]:
    if not CONNECT_SCHEMA.exists():
        pytest.fail(f"DocuSign's Connect sample is not at {CONNECT_SCHEMA}")
    schema = schema_from_sample(json.loads(CONNECT_SCHEMA.read_text()))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["required"] = [
        "event",
        "apiVersion",
        "uri",
        "retryCount",
        "configurationId",
        "generatedDateTime",
        "data",
    ]
    data = schema["properties"]["data"]
    data["required"] = ["accountId", "userId", "envelopeId", "envelopeSummary"]
    summary = data["properties"]["envelopeSummary"]
    summary["required"] = ["status", "envelopeId", "emailSubject", "recipients", "customFields"]
    return schema


def _violations(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Check the keywords `schema_from_sample` emits; used only if jsonschema is missing."""
    if "anyOf" in schema:
        if any(not _violations(instance, option, path) for option in schema["anyOf"]):
            return []
        return [f"{path}: matches no alternative"]
    python_types: dict[str, Any] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    expected = schema.get("type")
    if expected is not None:
        if isinstance(instance, bool) and expected in ("integer", "number"):
            return [f"{path}: expected {expected}, got boolean"]
        if not isinstance(instance, python_types[expected]):
            return [f"{path}: expected {expected}, got {type(instance).__name__}"]
    problems: list[str] = []
    if isinstance(instance, dict):
        properties = schema.get("properties", {})
        problems += [
            f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in instance
        ]
        for key, value in instance.items():
            if key in properties:
                problems += _violations(value, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}: unexpected field {key!r}")
    if isinstance(instance, list) and "items" in schema:
        for index, item in enumerate(instance):
            problems += _violations(item, schema["items"], f"{path}[{index}]")
    return problems


def assert_valid_connect(received: Received, schema: dict[str, Any]) -> dict[str, Any]:
    """HMAC first (as the service must), then the message's shape."""
    expected = base64.b64encode(hmac.new(HMAC_KEY.encode(), received.body, hashlib.sha256).digest())
    assert hmac.compare_digest(received.headers["x-docusign-signature-1"].encode(), expected)
    message = received.message
    try:
        import jsonschema
    except ImportError:  # not a dependency yet: same schema, checked by the fallback
        assert _violations(message, schema) == []
    else:
        jsonschema.validate(message, schema)
    return message


# --- tests ------------------------------------------------------------------------------


async def test_the_sdk_gets_a_token_over_tls_and_reads_back_envelopes_in_its_models(
    sandbox: Sandbox,
) -> None:
    def flow() -> dict[str, Any]:
        client = connect_sdk(sandbox)
        envelope_id = create_envelope(client)
        assert uuid.UUID(envelope_id)
        since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        found = client.envelopes.list_status_changes(
            client.account_id,
            custom_field=f"dealflow_key={DEALFLOW_KEY}",
            from_date=since,
            include="recipients,custom_fields",
        )
        other = client.envelopes.list_status_changes(
            client.account_id, custom_field="dealflow_key=deal_y.v1", from_date=since
        )
        recipients = client.envelopes.list_recipients(client.account_id, envelope_id)
        envelope = client.envelopes.get_envelope(
            client.account_id, envelope_id, include="recipients,custom_fields"
        )
        documents = client.envelopes.list_documents(client.account_id, envelope_id)
        original = client.envelopes.get_document(client.account_id, "1", envelope_id)
        with pytest.raises(ApiException) as no_from_date:
            client.envelopes.list_status_changes(client.account_id, custom_field="a=b")
        return {
            "id": envelope_id,
            "found": found,
            "other": other,
            "recipients": recipients,
            "envelope": envelope,
            "documents": documents,
            "original": original,
            "no_from_date": no_from_date.value,
        }

    result = await asyncio.to_thread(flow)
    envelope_id = result["id"]

    found = result["found"]
    assert isinstance(found, EnvelopesInformation)
    assert found.result_set_size == "1" and found.total_set_size == "1"
    (listed,) = found.envelopes
    assert listed.envelope_id == envelope_id and listed.status == "sent"
    assert listed.custom_fields.text_custom_fields[0].value == DEALFLOW_KEY
    assert result["other"].result_set_size == "0" and result["other"].envelopes is None

    recipients = result["recipients"]
    assert isinstance(recipients, Recipients)
    assert recipients.current_routing_order == "1" and recipients.recipient_count == "2"
    first, second = recipients.signers
    assert (first.email, first.routing_order, first.status) == (SIGNER_1[1], "1", "sent")
    assert first.sent_date_time and first.recipient_id_guid
    assert (second.email, second.routing_order, second.status) == (SIGNER_2[1], "2", "created")
    assert second.sent_date_time is None

    envelope = result["envelope"]
    assert isinstance(envelope, Envelope)
    assert envelope.envelope_id == envelope_id and envelope.status == "sent"
    assert envelope.email_subject == "Please sign: Acme Corp order form"
    assert (
        envelope.sent_date_time and envelope.created_date_time and envelope.status_changed_date_time
    )
    assert envelope.sender.account_id == envelope.sender.account_id != ""
    assert [s.name for s in envelope.recipients.signers] == [SIGNER_1[0], SIGNER_2[0]]
    assert envelope.custom_fields.text_custom_fields[0].name == "dealflow_key"

    documents = result["documents"]
    assert isinstance(documents, EnvelopeDocumentsResult)
    assert [d.document_id for d in documents.envelope_documents] == ["1", "certificate"]
    assert documents.envelope_documents[0].size_bytes == str(len(CONTRACT_PDF))
    assert result["original"] == CONTRACT_PDF

    error = result["no_from_date"]
    assert error.status == 400
    assert _error(error)["errorCode"] == "INVALID_REQUEST_PARAMETER"


async def test_signing_follows_routing_order_and_each_step_is_a_signed_connect_message(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    schema = connect_schema()
    client = await asyncio.to_thread(connect_sdk, sandbox)
    envelope_id = await asyncio.to_thread(create_envelope, client)
    await receiver.wait_for(2)  # envelope-sent, recipient-sent: sent after the REST answer

    early = await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_2[1]}/sign")
    assert early.status_code == 409
    assert early.json()["errorCode"] == "RECIPIENT_NOT_IN_SEQUENCE"

    first = await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_1[1]}/sign")
    assert first.status_code == 200, first.text
    state = first.json()
    assert state["envelope"]["status"] == "delivered"
    assert [r["status"] for r in state["envelope"]["recipients"]] == ["completed", "sent"]
    assert [d["event"] for d in state["deliveries"]] == [
        "recipient-delivered",
        "envelope-delivered",
        "recipient-completed",
        "recipient-sent",
    ]
    assert {d["state"] for d in state["deliveries"]} == {"delivered"}

    second = await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_2[1]}/sign")
    assert second.status_code == 200, second.text
    assert second.json()["envelope"]["status"] == "completed"
    again = await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_2[1]}/sign")
    assert again.status_code == 409

    # The control call returns after delivering, so everything has arrived by now.
    assert receiver.events() == [
        "envelope-sent",
        "recipient-sent",
        "recipient-delivered",
        "envelope-delivered",
        "recipient-completed",
        "recipient-sent",
        "recipient-delivered",
        "recipient-completed",
        "envelope-completed",
    ]
    messages = [assert_valid_connect(m, schema) for m in receiver.messages]
    assert {m["data"]["envelopeId"] for m in messages} == {envelope_id}
    completed = messages[-1]["data"]["envelopeSummary"]
    assert completed["status"] == "completed" and completed["completedDateTime"]
    assert [s["status"] for s in completed["recipients"]["signers"]] == ["completed", "completed"]
    assert completed["customFields"]["textCustomFields"][0]["value"] == DEALFLOW_KEY
    signed_1 = messages[4]
    assert signed_1["data"]["recipientId"] == "1"
    assert signed_1["data"]["envelopeSummary"]["recipients"]["signers"][0]["signedDateTime"]

    def downloads() -> tuple[Any, ...]:
        envelope = client.envelopes.get_envelope(client.account_id, envelope_id)
        combined = client.envelopes.get_document(client.account_id, "combined", envelope_id)
        with_certificate = client.envelopes.get_document(
            client.account_id, "combined", envelope_id, certificate="true"
        )
        certificate = client.envelopes.get_document(client.account_id, "certificate", envelope_id)
        return envelope, combined, with_certificate, certificate

    envelope, combined, with_certificate, certificate = await asyncio.to_thread(downloads)
    assert envelope.status == "completed" and envelope.completed_date_time
    for pdf in (combined, with_certificate, certificate):
        assert_well_formed_pdf(pdf)
    assert CONTRACT_PDF in combined  # the original travels inside, byte for byte
    assert _page_count(with_certificate) == _page_count(combined) + 1
    assert b"Certificate Of Completion" in certificate and SIGNER_2[1].encode() in certificate


async def test_void_resend_and_decline(sandbox: Sandbox, receiver: Receiver) -> None:
    schema = connect_schema()
    client = await asyncio.to_thread(connect_sdk, sandbox)

    def resend_then_void() -> tuple[Any, ...]:
        envelope_id = create_envelope(client, "deal_void.v1")
        update = client.envelopes.update_recipients(
            client.account_id,
            envelope_id,
            recipients=Recipients(signers=[Signer(recipient_id="1")]),
            resend_envelope="true",
        )
        client.envelopes.update(
            client.account_id,
            envelope_id,
            envelope=Envelope(status="voided", voided_reason="Deal re-scoped"),
        )
        voided = client.envelopes.get_envelope(client.account_id, envelope_id)
        with pytest.raises(ApiException) as void_again:
            client.envelopes.update(
                client.account_id,
                envelope_id,
                envelope=Envelope(status="voided", voided_reason="x"),
            )
        return envelope_id, update, voided, void_again.value

    envelope_id, update, voided, void_again = await asyncio.to_thread(resend_then_void)
    assert isinstance(update, RecipientsUpdateSummary)
    assert update.recipient_update_results[0].error_details.error_code == "SUCCESS"
    assert voided.status == "voided" and voided.voided_reason == "Deal re-scoped"
    assert voided.voided_date_time
    assert void_again.status == 400
    assert _error(void_again)["errorCode"] == "ENVELOPE_CANNOT_VOID_INVALID_STATE"

    view = (await control_get(sandbox, f"/envelopes/{envelope_id}")).json()
    assert len(view["recipients"][0]["resends"]) == 1 and view["recipients"][1]["resends"] == []
    after_void = await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_1[1]}/sign")
    assert after_void.status_code == 409

    declined_id = await asyncio.to_thread(create_envelope, client, "deal_decline.v1")
    response = await control(
        sandbox,
        f"/envelopes/{declined_id}/recipients/{SIGNER_1[1]}/decline",
        {"reason": "Legal has not approved clause 7"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["envelope"]["status"] == "declined"
    await sandbox.store.wait_for_deliveries()
    events = [(m.message["data"]["envelopeId"], m.message["event"]) for m in receiver.messages]
    assert (envelope_id, "envelope-voided") in events
    assert events[-2:] == [(declined_id, "recipient-declined"), (declined_id, "envelope-declined")]
    declined = assert_valid_connect(receiver.messages[-2], schema)
    signer = declined["data"]["envelopeSummary"]["recipients"]["signers"][0]
    assert signer["status"] == "declined"
    assert signer["declinedReason"] == "Legal has not approved clause 7"
    assert signer["declinedDateTime"]
    for message in receiver.messages:
        assert_valid_connect(message, schema)


async def test_dropped_messages_are_logged_and_can_be_redelivered_as_exact_duplicates(
    sandbox: Sandbox, receiver: Receiver
) -> None:
    client = await asyncio.to_thread(connect_sdk, sandbox)
    envelope_id = await asyncio.to_thread(create_envelope, client)
    await receiver.wait_for(2)

    dropped = await control(sandbox, "/connect/drop", {"count": 2})
    assert dropped.json() == {"drop_remaining": 2}
    signed = (
        await control(sandbox, f"/envelopes/{envelope_id}/recipients/{SIGNER_1[1]}/sign")
    ).json()
    states = [(d["event"], d["state"]) for d in signed["deliveries"]]
    assert states == [
        ("recipient-delivered", "dropped"),
        ("envelope-delivered", "dropped"),
        ("recipient-completed", "delivered"),
        ("recipient-sent", "delivered"),
    ]
    assert receiver.events()[2:] == ["recipient-completed", "recipient-sent"]
    # Polling still tells the truth the dropped messages carried.
    recipients = await asyncio.to_thread(
        client.envelopes.list_recipients, client.account_id, envelope_id
    )
    assert recipients.signers[0].delivered_date_time

    # A dropped message can arrive late, and a delivered one can arrive twice.
    late = signed["deliveries"][0]["delivery_id"]
    duplicate = signed["deliveries"][2]["delivery_id"]
    for delivery_id in (late, duplicate):
        response = await control(sandbox, f"/connect/redeliver/{delivery_id}")
        assert response.status_code == 200 and response.json()["state"] == "delivered"
    assert receiver.events()[4:] == ["recipient-delivered", "recipient-completed"]
    assert receiver.messages[5].body == receiver.messages[2].body
    signatures = {
        m.headers["x-docusign-signature-1"] for m in (receiver.messages[5], receiver.messages[2])
    }
    assert len(signatures) == 1

    log = (await control_get(sandbox, f"/connect/deliveries?envelope_id={envelope_id}")).json()
    attempts = {d["delivery_id"]: d["attempts"] for d in log["deliveries"]}
    assert [a["dropped"] for a in attempts[late]] == [True, False]
    assert len(attempts[duplicate]) == 2
    missing = await control(sandbox, "/connect/redeliver/no-such-delivery")
    assert missing.status_code == 404 and missing.json()["errorCode"] == "DELIVERY_NOT_FOUND"


async def test_requests_without_a_valid_token_or_assertion_are_refused(sandbox: Sandbox) -> None:
    client = await asyncio.to_thread(connect_sdk, sandbox)
    base = f"{sandbox.http_url}/restapi/v2.1/accounts/{client.account_id}"
    async with httpx.AsyncClient(trust_env=False) as http:
        missing = await http.get(f"{base}/envelopes?from_date=2024-01-01")
        wrong = await http.get(
            f"{base}/envelopes?from_date=2024-01-01", headers={"Authorization": "Bearer nope"}
        )
        good = {"Authorization": f"Bearer {client.access_token}"}
        other_account = await http.get(
            f"{sandbox.http_url}/restapi/v2.1/accounts/{uuid.uuid4()}/envelopes?from_date=2024-01-01",
            headers=good,
        )
        unknown = await http.get(f"{base}/envelopes/{uuid.uuid4()}", headers=good)
        bad_body = await http.post(f"{base}/envelopes", content=b"{not json", headers=good)
        xml_notification = await http.post(
            f"{base}/envelopes",
            headers=good,
            json={"status": "created", "eventNotification": {"url": "http://127.0.0.1:9/x"}},
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["errorCode"] == "USER_AUTHENTICATION_FAILED"
        assert set(response.json()) == {"errorCode", "message"}
    assert other_account.status_code == 400
    assert other_account.json()["errorCode"] == "USER_LACKS_MEMBERSHIP"
    assert unknown.status_code == 404 and unknown.json()["errorCode"] == "ENVELOPE_DOES_NOT_EXIST"
    assert bad_body.status_code == 400 and bad_body.json()["errorCode"] == "INVALID_REQUEST_BODY"
    assert xml_notification.status_code == 400
    assert "format" in xml_notification.json()["message"]

    # The SDK always sets aud to the host it posts to, so a wrong audience (a JWT made
    # for the real DocuSign) is built by hand.
    trust = ssl.create_default_context(cafile=str(sandbox.tls.cert_path))
    async with httpx.AsyncClient(trust_env=False, verify=trust) as http:
        now = int(datetime.now(UTC).timestamp())
        claims = {
            "iss": INTEGRATION_KEY,
            "sub": USER_ID,
            "aud": "account-d.docusign.com",
            "iat": now,
            "exp": now + 3600,
            "scope": "signature impersonation",
        }
        assertion = jwt.encode(claims, PRIVATE_KEY, algorithm="RS256")
        refused = await http.post(
            f"{sandbox.https_url}/oauth/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            },
        )
        unsigned = await http.post(
            f"{sandbox.https_url}/oauth/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": "x.y.z",
            },
        )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert "aud" in refused.json()["error_description"]
    assert unsigned.status_code == 400 and unsigned.json()["error"] == "invalid_grant"


async def test_envelopes_and_tokens_survive_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    state_dir = tmp_path / "sandbox"
    async with running_sandbox(state_dir, receiver.url) as first:
        client = await asyncio.to_thread(connect_sdk, first)
        envelope_id = await asyncio.to_thread(create_envelope, client)
        cert = first.tls.cert_path.read_bytes()
    assert json.loads((state_dir / "docusign.json").read_text())["envelopes"][envelope_id]

    async with running_sandbox(state_dir, receiver.url) as second:
        assert second.tls.cert_path.read_bytes() == cert  # reused, so clients keep trusting it
        client.api_client.host = f"{second.http_url}/restapi"
        second.clients.append(client.api_client)
        recipients = await asyncio.to_thread(
            client.envelopes.list_recipients, client.account_id, envelope_id
        )
        assert recipients.signers[0].status == "sent"
        response = await control(second, f"/envelopes/{envelope_id}/recipients/{SIGNER_1[1]}/view")
        assert response.status_code == 200
        assert response.json()["envelope"]["recipients"][0]["status"] == "delivered"
        listing = await control_get(second, "/envelopes?custom_field=dealflow_key=deal_x.v1")
        assert [e["envelope_id"] for e in listing.json()["envelopes"]] == [envelope_id]


# --- PDF checks -------------------------------------------------------------------------


def assert_well_formed_pdf(data: bytes) -> None:
    """Header, trailer, and a cross-reference table whose every offset starts its object."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    startxref = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    assert data[startxref:].startswith(b"xref")
    header = re.match(rb"xref\s+0 (\d+)\s+", data[startxref:])
    assert header is not None
    count = int(header.group(1))
    table = data[startxref + header.end() :].split(b"\n")[:count]
    for number, entry in enumerate(table[1:], start=1):
        offset = int(entry[:10])
        assert data[offset:].startswith(b"%d 0 obj" % number), f"object {number} misplaced"


def _page_count(data: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", data))
