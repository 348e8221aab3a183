"""Signed approval links: ``<token id>.<expiry unix>.<HMAC>``.

The HMAC (keyed with DEALFLOW_LINK_SIGNING_KEY) proves we issued the token and its expiry; the
``approval_links`` row binds it to one approver and one step and records its single use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# The id is at most the approval_links column (64); the expiry is Unix seconds (12 digits reach
# the year 33658); the HMAC-SHA256 is 43 characters of unpadded base64url. ASCII only: `[0-9]`
# and friends, not `\d`, which would also take other scripts' digits.
TOKEN_ID_MAX = 64
MAX_TOKEN_LENGTH = TOKEN_ID_MAX + 1 + 12 + 1 + 43
_TOKEN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


class InvalidToken(Exception):
    pass


def _sig(key: str, payload: str) -> str:
    digest = hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(key: str, token_id: str, expires_unix: int) -> str:
    payload = f"{token_id}.{expires_unix}"
    return f"{payload}.{_sig(key, payload)}"


def parse_token(key: str, token: str, *, now_unix: float) -> str:
    """The token id, if the token is ours and not expired; else InvalidToken.

    Anything that is not the shape we issue (non-ASCII, too long, a non-numeric or absurd
    expiry, characters outside base64url) is "malformed" before any HMAC is computed, so
    garbage from a URL bar or a scanner is a clean 404 and never an exception.
    """
    match = _TOKEN.fullmatch(token) if len(token) <= MAX_TOKEN_LENGTH else None
    if match is None:
        raise InvalidToken("malformed token")
    token_id, expires, sig = match.groups()
    if not hmac.compare_digest(sig.encode(), _sig(key, f"{token_id}.{expires}").encode()):
        raise InvalidToken("bad signature")
    if int(expires) < now_unix:
        raise InvalidToken("expired")
    return token_id
