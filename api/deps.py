"""Request dependencies: settings, database sessions, the Temporal client, the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from api.errors import ApiError
from db.models import Person
from db.org import person_for_api_key
from dealflow.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


async def get_current_person(request: Request, session: SessionDep) -> Person:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "unauthorized", "Send an API key: Authorization: Bearer <key>.")
    person = await person_for_api_key(session, key=key.strip())
    if person is None:
        raise ApiError(401, "unauthorized", "The API key is unknown or revoked.")
    request.state.person_email = person.email
    return person


CurrentPerson = Annotated[Person, Depends(get_current_person)]


def require_role(person: Person, *roles: str) -> None:
    if not set(roles) & set(person.roles):
        raise ApiError(403, "forbidden", f"This needs one of the roles: {', '.join(roles)}.")
