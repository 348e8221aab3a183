"""DocuSign eSignature through ``docusign-esign``: envelopes, recipients, documents.

The SDK is synchronous (urllib3); the signature activities call this client in a thread.
Authentication is the JWT grant: the integration key, the impersonated user and the RSA private
key from Settings; the token is cached until shortly before it expires. DocuSign takes no
idempotency key on envelope creation, so each envelope carries our own key in a hidden custom
field (``dealflow_key``, see ``dealflow.ids.envelope_key``) and a retried create first looks for
it: a create that timed out may still have succeeded.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

from docusign_esign import (
    ApiClient,
    Configuration,
    Envelope,
    EnvelopeDefinition,
    EnvelopesApi,
    Recipients,
    Signer,
)
from docusign_esign.client.api_response import RESTClientObject

from dealflow.settings import Settings
from messages.signature import EnvelopeState, RecipientState

KEY_FIELD = "dealflow_key"


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class DocuSignClient:
    """A small interface over the SDK: the few calls dealflow makes, blocking."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._api: EnvelopesApi | None = None
        self._account_id = ""
        self._expires = 0.0

    def _envelopes(self) -> tuple[EnvelopesApi, str]:
        with self._lock:
            if self._api is None or time.time() > self._expires:
                self._connect()
            assert self._api is not None
            return self._api, self._account_id

    def _connect(self) -> None:
        s = self._settings
        client = ApiClient(oauth_host_name=s.docusign_oauth_host)
        if s.docusign_ca_cert:
            # The sandbox serves OAuth over TLS with a self-signed certificate; trust it the way
            # the SDK allows (it hardcodes https for OAuth).
            configuration = Configuration()
            configuration.ssl_ca_cert = str(s.docusign_ca_cert)
            client.rest_client = RESTClientObject(configuration=configuration)
        token = client.request_jwt_user_token(
            client_id=s.docusign_integration_key,
            user_id=s.docusign_user_id,
            oauth_host_name=s.docusign_oauth_host,
            private_key_bytes=s.secret("docusign_private_key").encode(),
            expires_in=3600,
            scopes=["signature", "impersonation"],
        )
        account = client.get_user_info(token.access_token).accounts[0]
        client.host = account.base_uri + "/restapi"
        client.set_default_header("Authorization", f"Bearer {token.access_token}")
        self._api = EnvelopesApi(client)
        self._account_id = account.account_id
        self._expires = time.time() + int(token.expires_in or 3600) - 300

    def find(self, key: str) -> str | None:
        api, account = self._envelopes()
        since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
        result = api.list_status_changes(
            account, custom_field=f"{KEY_FIELD}={key}", from_date=since
        )
        for envelope in result.envelopes or []:
            if envelope.status != "voided":
                return envelope.envelope_id
        return None

    def create(self, definition: EnvelopeDefinition) -> str:
        api, account = self._envelopes()
        return api.create_envelope(account, envelope_definition=definition).envelope_id

    def state(self, envelope_id: str) -> EnvelopeState:
        api, account = self._envelopes()
        envelope = api.get_envelope(account, envelope_id)
        recipients = api.list_recipients(account, envelope_id)
        return EnvelopeState(
            envelope_id=envelope_id,
            status=envelope.status,
            voided_reason=envelope.voided_reason,
            recipients=[
                RecipientState(
                    recipient_id=r.recipient_id,
                    email=r.email,
                    name=r.name,
                    routing_order=int(r.routing_order or 1),
                    status=r.status,
                    delivered_at=_parse_time(r.delivered_date_time),
                    signed_at=_parse_time(r.signed_date_time),
                    declined_at=_parse_time(r.declined_date_time),
                    declined_reason=r.declined_reason,
                )
                for r in recipients.signers or []
            ],
        )

    def resend(self, envelope_id: str, recipient_ids: list[str]) -> None:
        api, account = self._envelopes()
        api.update_recipients(
            account,
            envelope_id,
            recipients=Recipients(signers=[Signer(recipient_id=r) for r in recipient_ids]),
            resend_envelope="true",
        )

    def void(self, envelope_id: str, reason: str) -> None:
        api, account = self._envelopes()
        api.update(account, envelope_id, envelope=Envelope(status="voided", voided_reason=reason))

    def download(self, envelope_id: str, document: str) -> bytes:
        api, account = self._envelopes()
        data = api.get_document(account, document, envelope_id)
        return data if isinstance(data, bytes) else Path(data).read_bytes()
