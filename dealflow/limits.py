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
# POST /v1/campaigns carries the whole contact list (up to MAX_CONTACTS): 100,000 contacts of
# ~300 bytes of JSON each (email, names, company, title, zone, a few fields).
MAX_CAMPAIGN_BODY = 32 * MIB

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

# --- Text fields ---------------------------------------------------------------------------------
# Each is the length of its column in db/models.py / db/campaign_models.py (the models take their
# lengths from here, so the two cannot drift). Columns that are ``Text`` in the database still get
# an edge limit: a 10 MB "comment" is never what a person meant, and it would ride along in every
# workflow history and status query.
EMAIL = 320  # RFC 5321: 64 (local part) + 1 + 255 (domain)
PERSON_NAME = 200  # signers, contacts' first/last name, senders' display name
TITLE = 200  # a signer's or a contact's job title
DEAL_NAME = 300
EXTERNAL_ID = 200  # the CRM's id of the deal
ACCOUNT_NAME = 300
DOMAIN = 255  # RFC 1035: a domain name is at most 255 octets
REGION = 16  # column; the edge accepts 1-3 characters (ISO 3166-2 subdivision code)
INDUSTRY = 120
TAX_ID = 64
COMPETITOR = 200
SKU = 100
LINE_DESCRIPTION = 500
TIMEZONE = 64  # IANA zone names are at most ~32 characters
CAMPAIGN_NAME = 300
COMPANY = 300
VARIANT_NAME = 64
CONTACT_COUNTRY = 16
IDEMPOTENCY_KEY = 200
MESSAGE_ID = 255  # an RFC 5322 Message-ID, without angle brackets
# Text columns, bounded at the edge only:
NOTES = 20_000
CUSTOM_TERM_TEXT = 20_000
COMMENT = 5_000  # an approval decision's comment
REASON = 2_000  # cancel / lost reasons, a task's "done" note
TEMPLATE = 20_000  # one campaign subject or body template
FIELD_NAME = 64  # a contact's custom merge field name, or a fallback's name
FIELD_VALUE = 2_000  # its value

# --- Collections -------------------------------------------------------------------------------
MAX_SIGNERS = 20
MAX_CUSTOM_TERMS = 50
MAX_CONTACTS = 100_000
MAX_CONTACT_FIELDS = 50
MAX_FALLBACKS = 50
MAX_STEPS = 20
MAX_VARIANTS = 10
MAX_EMPLOYEES = 10_000_000  # an Integer column (2**31 - 1); the largest employer has ~2.1 M

# --- Numbers of a deal ---------------------------------------------------------------------------
# The quote's money columns are Numeric(18, 4): at most 14 digits before the point, i.e. every
# figure must stay below 10**14. The bounds below keep the largest possible quote ten times
# under that, whatever the currency (a yen price is ~150x a dollar price, so they are generous):
#   line total  = quantity x unit_price             <= MAX_LINE_TOTAL          = 5 x 10**10
#   subtotal    = sum of MAX_LINE_ITEMS line totals <= 100 x 5 x 10**10        = 5 x 10**12
#   discount    >= 0, so taxable amount             <= subtotal                = 5 x 10**12
#   tax         <= 100 % of taxable (domain/tax.py refuses a rate over 100)    <= 5 x 10**12
#   total       = taxable + tax                     <= 10**13  <  10**14
# Installments and revenue months are parts of the total, so they fit too. Quantities and
# prices are stored with 4 decimals (Numeric(18, 4)); more decimals are refused with a 422
# rather than rounded, so the quote prices exactly what the rep typed.
MONEY_DECIMALS = 4
MAX_QUANTITY = 10_000_000
MAX_UNIT_PRICE = 10_000_000_000
MAX_LINE_TOTAL = 50_000_000_000
# 100, not more: every line is a row of the order form, and WeasyPrint needs ~0.1 s per row on a
# busy machine (a 500-line order form took 26 s, past the rendering activity's heartbeat).
MAX_LINE_ITEMS = 100
MAX_QUOTE_TOTAL = 10**14  # exclusive: Numeric(18, 4)
MAX_DISCOUNT_PCT = 100  # discount_pct is Numeric(7, 4)
MAX_TERM_MONTHS = 120  # ten years: the revenue schedule has one row per month
MAX_PAYMENT_TERMS_DAYS = 365  # the edge's bound; domain/validation.py asks for 180 or less

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
