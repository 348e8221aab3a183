"""The org directory and API keys: loaded from config/, read by auth and approval routing."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApiKey, Person


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class OrgDirectory:
    """The parsed org file: people, the primary approver per policy role, our countersigner."""

    version: str
    company: str
    countersigner: str
    approver_of: dict[str, str]
    people: list[dict]

    @classmethod
    def load(cls, path: Path) -> OrgDirectory:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        return cls(
            version=raw["version"],
            company=raw["company"],
            countersigner=raw["countersigner"],
            approver_of=dict(raw.get("approver_of", {})),
            people=list(raw["people"]),
        )


async def load_org(
    session: AsyncSession, *, org: OrgDirectory, api_keys: list[dict] | None = None
) -> None:
    """Upsert every person of the directory and (sandbox) their API keys; safe to run again."""
    for p in org.people:
        values = {
            "email": p["email"],
            "name": p["name"],
            "title": p.get("title"),
            "roles": p.get("roles", []),
            "approver_roles": p.get("approver_roles", []),
            "manager_email": p.get("manager"),
            "backup_email": p.get("backup"),
            "timezone": p.get("timezone", "UTC"),
            "slack_user_id": p.get("slack_user_id"),
            "specialties": p.get("specialties", []),
            "capacity": p.get("capacity"),
        }
        stmt = insert(Person).values(**values)
        # Out-of-office state is set through the API and must survive a reload of the file.
        stmt = stmt.on_conflict_do_update(index_elements=[Person.email], set_=values)
        await session.execute(stmt)
    for entry in api_keys or []:
        key = entry["key"]
        stmt = insert(ApiKey).values(
            key_sha256=hash_api_key(key),
            key_prefix=key[:16],
            person_email=entry["email"],
            label="sandbox",
        )
        await session.execute(stmt.on_conflict_do_nothing(index_elements=[ApiKey.key_sha256]))


async def person_for_api_key(session: AsyncSession, *, key: str) -> Person | None:
    """The person a live (not revoked) API key belongs to."""
    stmt = (
        select(Person)
        .join(ApiKey, ApiKey.person_email == Person.email)
        .where(ApiKey.key_sha256 == hash_api_key(key), ApiKey.revoked_at.is_(None))
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_person(session: AsyncSession, *, email: str) -> Person | None:
    """One person by email."""
    return await session.get(Person, email)
