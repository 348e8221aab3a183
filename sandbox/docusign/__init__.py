"""DocuSign eSignature sandbox: OAuth JWT grant, the envelope REST subset, Connect webhooks.

dealflow talks to DocuSign only through the official `docusign-esign` SDK; this module is the
other end of that wire, so the SDK's own requests and model deserialisation are what it is
built (and tested) against. Paths mirror DocuSign's:

- `POST /oauth/token` (JWT bearer grant) and `GET /oauth/userinfo`;
- `/restapi/v2.1/accounts/{accountId}/envelopes` — create, list status changes (filtered by
  `custom_field=name=value`, `from_date`, `status`, `envelope_ids`), get, update (send a
  draft, void with `voidedReason`, `resend_envelope=true`), recipients (list, update,
  `resend_envelope=true`), documents (list; get by id, `combined`, `certificate`).
- Connect: every envelope or recipient status change is POSTed as a JSON SIM message (the
  shape of docusign-connect.schema-v2.json) with `X-DocuSign-Signature-1` =
  base64(HMAC-SHA256(hmac_key, raw body)).
- Control API under `/_sandbox/docusign` to act as the signers and to steer Connect (drop the
  next N messages, redeliver one).

Setting up docusign-esign against the sandbox
---------------------------------------------
The SDK hardcodes `https://` + `oauth_host_name` for `/oauth/token` and `/oauth/userinfo`,
so the sandbox app must also be served over HTTPS with the certificate from
`sandbox.tls.ensure_self_signed_cert(state_dir)` (uvicorn `ssl_certfile`/`ssl_keyfile`).
`ApiClient.__init__` builds its urllib3 pool from a fresh `Configuration()`, so the CA file
is set by replacing the REST client (this avoids `Configuration.set_default`, which would
change every ApiClient in the process)::

    from docusign_esign import ApiClient, Configuration, EnvelopesApi
    from docusign_esign.client.api_response import RESTClientObject

    oauth_host = "127.0.0.1:8443"              # host:port of the sandbox's HTTPS listener
    api_client = ApiClient(oauth_host_name=oauth_host)
    configuration = Configuration()
    configuration.ssl_ca_cert = str(tls_files.cert_path)   # trust the self-signed cert
    api_client.rest_client = RESTClientObject(configuration=configuration)

    token = api_client.request_jwt_user_token(
        client_id="<integration key>", user_id="<user guid>", oauth_host_name=oauth_host,
        private_key_bytes=rsa_private_key_pem, expires_in=3600,
        scopes=["signature", "impersonation"])
    account = api_client.get_user_info(token.access_token).accounts[0]
    api_client.host = account.base_uri + "/restapi"   # https://127.0.0.1:8443/restapi
    envelopes = EnvelopesApi(api_client)               # account.account_id for account_id

The REST API is served on every listener, so `api_client.host` may also be
`http://127.0.0.1:<http port>/restapi`; `base_uri` in userinfo is the listener the userinfo
request came in on unless `install(..., base_uri=...)` fixes it. The JWT's `aud` must be the
OAuth host the client used (what the SDK sends), or one of `jwt_audiences`.

Where Connect messages go: to the envelope's own `eventNotification.url` when the envelope
was created with one (filtered by its `events`/`envelopeEvents`/`recipientEvents`, signed
only if `includeHMAC` is "true", and it must ask for JSON: `eventData.format = "json"`), and
otherwise to the account-level `connect_url`. Events sent: envelope-sent,
envelope-delivered, envelope-completed, envelope-declined, envelope-voided, recipient-sent,
recipient-delivered, recipient-completed, recipient-declined.

State lives in `<state_dir>/docusign.json` (rewritten atomically on every change) and the
uploaded documents in `<state_dir>/docusign-documents/`, written once, so the JSON stays
small and a restart keeps envelopes, tokens and the delivery log.

The package: `models` (constants, errors, state), `wire` (DocuSign's JSON shapes, the PDF
writer), `parsing` (envelope definitions from requests), `auth` (the JWT grant, tokens),
`connect` (Connect's HMAC and deliveries), `store` (`DocuSignStore`: the envelope rules),
`routes` (the routers and `install`).
"""
