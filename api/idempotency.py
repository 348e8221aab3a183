"""``Idempotency-Key`` on creates: the same key and body get the first response back.

The record is written in the same transaction as what the request creates, so a crash between
the two cannot leave a deal without its record (which would let a retry create a second one).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError
from db.models import IdempotencyRecord
from dealflow import limits

MAX_KEY_LENGTH = 200
# The header every create route takes (``idempotency_key: IdempotencyKey = None``).
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", max_length=limits.IDEMPOTENCY_KEY)
]


def request_digest(body_json: str) -> str:
    return hashlib.sha256(body_json.encode()).hexdigest()


def check_key(key: str | None) -> None:
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
        )


async def replay(
    session: AsyncSession, *, person_email: str, key: str, method: str, path: str, digest: str
) -> JSONResponse | None:
    """The stored response for this key, or None when the key is new."""
    record = await session.get(IdempotencyRecord, (person_email, key))
    if record is None:
        return None
    if record.request_sha256 != digest or record.method != method or record.path != path:
        raise ApiError(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request.",
        )
    return JSONResponse(
        record.response_body,
        status_code=record.status_code,
        headers={"Idempotent-Replayed": "true"},
    )


def remember(
    session: AsyncSession,
    *,
    person_email: str,
    key: str,
    method: str,
    path: str,
    digest: str,
    status_code: int,
    body: Any,
) -> None:
    session.add(
        IdempotencyRecord(
            person_email=person_email,
            key=key,
            method=method,
            path=path,
            request_sha256=digest,
            status_code=status_code,
            response_body=jsonable_encoder(body),
        )
    )


class IdempotentCreate:
    """The Idempotency-Key steps of one create request: replay, remember, and the race.

    create = IdempotentCreate(session, person_email=..., key=..., path=..., body_json=...)
    if (replayed := await create.replay()) is not None:
        return replayed
    ... create the rows, build the response body ...
    return await create.commit(201, body)   # on IntegrityError: `await create.after_conflict()`
    """

    def __init__(
        self,
        session: AsyncSession,
        *,
        person_email: str,
        key: str | None,
        path: str,
        body_json: str,
    ) -> None:
        check_key(key)
        self._session, self._key = session, key
        # What identifies the request: its record's key and the check that a replay matches.
        self._request = {
            "person_email": person_email,
            "method": "POST",
            "path": path,
            "digest": request_digest(body_json),
        }

    async def replay(self) -> JSONResponse | None:
        if not self._key:
            return None
        return await replay(self._session, key=self._key, **self._request)

    def remember(self, status_code: int, body: Any) -> None:
        if self._key:
            remember(
                self._session, key=self._key, status_code=status_code, body=body, **self._request
            )

    async def commit(self, status_code: int, body: BaseModel) -> JSONResponse:
        """The close of every idempotent create route: remember the answer in the transaction
        that created the rows, commit both, and answer. An IntegrityError from the commit goes
        to the caller, which asks `after_conflict` whether a concurrent twin won."""
        self.remember(status_code, body.model_dump(mode="json"))
        await self._session.commit()
        return JSONResponse(jsonable_encoder(body), status_code=status_code)

    async def after_conflict(self) -> JSONResponse | None:
        """After an IntegrityError: a concurrent request with the same key won; answer as it."""
        await self._session.rollback()
        return await self.replay()


async def open_create(
    session: AsyncSession,
    *,
    person_email: str,
    key: str | None,
    request: Request,
    body: BaseModel,
) -> tuple[IdempotentCreate, JSONResponse | None]:
    """The opening of every idempotent create route: check the key (400), then the stored
    answer when this is a retry of a request already made (422 if the key was used otherwise).

    create, replayed = await open_create(session, person_email=..., key=..., request=..., body=...)
    if replayed is not None:
        return replayed
    """
    create = IdempotentCreate(
        session,
        person_email=person_email,
        key=key,
        path=request.url.path,
        body_json=body.model_dump_json(),
    )
    return create, await create.replay()
