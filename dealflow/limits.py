"""Every size limit of the edge, defined once.

The request schemas (and so the OpenAPI document), the database columns and the error messages
take their numbers from here, so what the API accepts is always what the store can hold.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

# Request bodies, enforced before the body is read (api/body_limit.py). JSON requests and the
# Slack/DocuSign/Stripe webhooks are small; inbound mail is a whole RFC 5322 message as the mail
# provider forwards it (providers cap messages at 25-30 MB); the wet-signed PDF is streamed.
MAX_JSON_BODY = 1 * MIB
MAX_INBOUND_MAIL_BODY = 32 * MIB
MAX_UPLOAD_BODY = 25 * MIB

# Inbound mail: the classifier reads at most this much of the text (quoted text stripped), so
# its cost is bounded whatever the message's size.
MAX_CLASSIFIED_TEXT = 64 * KIB

# Lists (GET /v1/deals, /v1/approvals, /v1/campaigns, /v1/tasks): a page is `limit` rows, 50
# unless asked, never more than 200 (a page is one indexed range scan plus, for deals and the
# inbox, one quote lookup per row: 200 keeps the slowest page well under the query budget).
LIST_DEFAULT_LIMIT = 50
LIST_MAX_LIMIT = 200
# A cursor is a few dozen bytes of base64url JSON; anything longer is not one of ours.
MAX_CURSOR_LENGTH = 512

# Campaign -> deal: how much of the contact's reply is quoted in the new deal's notes.
MAX_REPLY_IN_DEAL_NOTES = 2000
