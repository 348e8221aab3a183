"""Signed approval links: ``<token id>.<expiry unix>.<HMAC>``.

The HMAC (keyed with DEALFLOW_LINK_SIGNING_KEY) proves we issued the token and its expiry; the
``approval_links`` row binds it to one approver and one step and records its single use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class InvalidToken(Exception):
    pass


def _sig(key: str, payload: str) -> str:
    digest = hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(key: str, token_id: str, expires_unix: int) -> str:
    payload = f"{token_id}.{expires_unix}"
    return f"{payload}.{_sig(key, payload)}"


def parse_token(key: str, token: str, *, now_unix: float) -> str:
    """The token id, if the token is ours and not expired; else InvalidToken."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        raise InvalidToken("malformed token")
    token_id, expires, sig = parts
    if not hmac.compare_digest(sig, _sig(key, f"{token_id}.{expires}")):
        raise InvalidToken("bad signature")
    if int(expires) < now_unix:
        raise InvalidToken("expired")
    return token_id
