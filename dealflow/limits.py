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

# Inbound mail, parsing (domain/replies.py): what the parser and classifier ever look at, so a
# hostile message costs time linear in these numbers, not in its size. The parser reads at most
# MAX_PARSED_MAIL characters of a raw message and stops before the MAX_MIME_PARTS-th line that
# starts with "--" (every MIME part starts with such a boundary line), so no message makes more
# parts (or nesting levels) than that; headers past MAX_MAIL_HEADERS are not read and each value
# is cut to MAX_MAIL_HEADER_VALUE before the email package parses it (its structured-header
# parser is super-linear on long values); a text part is decoded to at most MAX_DECODED_TEXT
# characters before quotes are stripped.
MAX_PARSED_MAIL = 2 * MIB
MAX_MIME_PARTS = 200
MAX_MAIL_HEADERS = 500
MAX_MAIL_HEADER_VALUE = 8 * KIB
MAX_DECODED_TEXT = 256 * KIB
# The reply text stored with an inbound message (quotes stripped).
MAX_STORED_REPLY_TEXT = 20_000
