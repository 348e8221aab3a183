"""OAuth for the DocuSign sandbox: the JWT bearer grant (assertion checks, signature
verification), bearer tokens, userinfo and the account check."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from sandbox.docusign.models import (
    _CLOCK_SKEW,
    JWT_BEARER_GRANT,
    AccessToken,
    DocuSignError,
    OAuthError,
    _now,
    _State,
)
from sandbox.docusign.wire import _Wire


class OAuthGrants:
    """The JWT grant and token checks of `DocuSignStore` (which holds the state and the lock)."""

    # Set by DocuSignStore.__init__ (as is `_save`, which persists the state).
    _state: _State
    _lock: threading.RLock
    jwt_public_keys: dict[str, bytes]
    jwt_audiences: frozenset[str]
    token_lifetime: int
    account_id: str
    user_id: str
    account_name: str
    base_uri: str | None
    wire: _Wire

    def issue_token(self, form: dict[str, str], *, oauth_host: str) -> dict[str, Any]:
        """The JWT bearer grant: check the assertion's structure, then issue a token.

        Signatures are verified only for integration keys listed in `jwt_public_keys`; with
        none configured any RS256 JWT of the right shape is accepted, as the sandbox has no
        way to know the client's public key.
        """
        if form.get("grant_type") != JWT_BEARER_GRANT:
            raise OAuthError(
                400, "unsupported_grant_type", "grant_type must be " + JWT_BEARER_GRANT
            )
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as error:
            raise OAuthError(
                400, "invalid_grant", f"the assertion is not a JWT: {error}"
            ) from error
        if header.get("alg") != "RS256":
            raise OAuthError(400, "invalid_grant", "the assertion must be signed with RS256")
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise OAuthError(400, "invalid_grant", "iss (the integration key) is missing")
        if self.jwt_public_keys:
            key = self.jwt_public_keys.get(issuer)
            if key is None:
                raise OAuthError(400, "invalid_grant", "issuer_not_found")
            try:
                jwt.decode(
                    assertion,
                    key=key,
                    algorithms=["RS256"],
                    options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
                )
            except jwt.PyJWTError as error:
                raise OAuthError(400, "invalid_grant", "no_valid_keys_or_signatures") from error
        audience = claims.get("aud")
        accepted = {oauth_host, *self.jwt_audiences}
        if audience not in accepted:
            raise OAuthError(
                400,
                "invalid_grant",
                f"aud must be the OAuth host name ({oauth_host}), got {audience!r}",
            )
        now = _now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise OAuthError(400, "invalid_grant", "iat and exp are required (seconds since epoch)")
        issued = datetime.fromtimestamp(iat, UTC)
        expires = datetime.fromtimestamp(exp, UTC)
        if issued > now + _CLOCK_SKEW:
            raise OAuthError(400, "invalid_grant", "iat is in the future")
        if expires <= now:
            raise OAuthError(400, "invalid_grant", "the assertion has expired")
        if expires - issued > timedelta(hours=1) + _CLOCK_SKEW:
            raise OAuthError(400, "invalid_grant", "exp may be at most one hour after iat")
        scope = claims.get("scope")
        if not isinstance(scope, str) or "signature" not in scope.split():
            raise OAuthError(400, "invalid_scope", "scope must include 'signature'")
        subject = claims.get("sub")
        if subject is not None and (not isinstance(subject, str) or not subject):
            raise OAuthError(400, "invalid_grant", "sub must be the user id to impersonate")
        token = AccessToken(
            token=secrets.token_urlsafe(48),
            user_id=subject or self.user_id,
            client_id=issuer,
            scope=scope,
            expires_at=now + timedelta(seconds=self.token_lifetime),
        )
        with self._lock:
            self._state.tokens = {
                value: entry
                for value, entry in self._state.tokens.items()
                if entry.expires_at > now
            }
            self._state.tokens[token.token] = token
            self._save()
        return {
            "access_token": token.token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": scope,
        }

    def authenticate(self, authorization: str | None) -> AccessToken:
        """The token behind an `Authorization: Bearer` header, or DocuSign's 401."""
        scheme, _, value = (authorization or "").partition(" ")
        with self._lock:
            token = self._state.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_at <= _now():
            raise DocuSignError(
                401,
                "USER_AUTHENTICATION_FAILED",
                "One or both of Username and Password are invalid. Invalid access token",
            )
        return token

    def userinfo(self, token: AccessToken, *, base_uri: str) -> dict[str, Any]:
        return {
            "sub": token.user_id,
            "name": self.wire.user_name,
            "given_name": "Dealflow",
            "family_name": "Sandbox",
            "created": "2024-01-01T00:00:00.0000000Z",
            "email": self.wire.user_email,
            "accounts": [
                {
                    "account_id": self.account_id,
                    "is_default": True,
                    "account_name": self.account_name,
                    "base_uri": self.base_uri or base_uri,
                }
            ],
        }

    def check_account(self, account_id: str) -> None:
        if account_id != self.account_id:
            raise DocuSignError(
                400,
                "USER_LACKS_MEMBERSHIP",
                "The UserID does not have a valid membership in this Account.",
            )
