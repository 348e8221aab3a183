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
