"""The CRM behind a small interface: HubSpot's CRM v3 REST API now, Salesforce later.

``CrmClient`` is what the closing activities need and nothing more: update the rep's CRM deal
(the deal's ``external_id``) or else upsert one by our deal id, and add a note to it exactly
once per key. A client raises ``CrmRejected`` for answers no
retry can change (bad data, bad credentials) and lets everything else (timeouts, 429, 5xx)
propagate, so the activity's retry policy handles it.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from dealflow.settings import Settings
from domain.money import plain_decimal

log = logging.getLogger(__name__)


class CrmDeal(BaseModel):
    """A deal as the CRM should show it, in CRM-neutral terms."""

    deal_id: str  # ours: the CRM keeps it in a unique property and upserts by it
    # The CRM's own id for the deal, when the rep gave one (the deal's external_id): that CRM
    # deal is updated (and tagged with our deal id) instead of a new one being created.
    crm_id: str | None = None
    name: str
    stage: Literal["closed_won"]
    amount: Decimal  # contract value before tax
    currency: str
    close_date: dt.date


class CrmRejected(Exception):
    """The CRM refused the request for a reason no retry fixes (4xx other than 429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"CRM answered {status}: {message}")
        self.status = status


class CrmUnavailable(Exception):
    """The CRM could not answer now (429, 5xx): retryable."""


class CrmClient(Protocol):
    async def upsert_deal(self, deal: CrmDeal) -> str:
        """Update the CRM deal ``deal.crm_id`` when given, else create or update the deal keyed
        by ``deal.deal_id``; return the CRM's deal id. Safe to repeat either way."""
        ...

    async def add_note(self, crm_deal_id: str, *, key: str, body_html: str, at: dt.datetime) -> str:
        """Attach a note to the deal once per ``key`` (looked up first); return its id."""
        ...


class HubSpotCrm(CrmClient):
    """HubSpot CRM v3 over httpx (the sandbox in sandbox/crm.py speaks the same API).

    The deal is upserted with ``batch/upsert`` on the unique property ``dealflow_deal_id``
    (HubSpot's real upsert; a PATCH by idProperty does not create there). HubSpot has no
    idempotency key for notes, so each note carries its key in its body and ``add_note`` reads
    the deal's notes for it before creating one.
    """

    ID_PROPERTY = "dealflow_deal_id"
    NOTE_TO_DEAL = 214  # HubSpot-defined association type id
    STAGES = {"closed_won": "closedwon"}

    def __init__(
        self, *, base_url: str, token: str, timeout: float = 10.0, pipeline: str = "default"
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._pipeline = pipeline

    @classmethod
    def from_settings(cls, settings: Settings) -> HubSpotCrm:
        return cls(
            base_url=settings.crm_api_url,
            token=settings.secret("crm_api_token"),
            timeout=settings.crm_timeout_seconds,
        )

    async def upsert_deal(self, deal: CrmDeal) -> str:
        properties = {
            "dealname": deal.name,
            "pipeline": self._pipeline,
            "dealstage": self.STAGES[deal.stage],
            "amount": plain_decimal(deal.amount, trim=False),
            "deal_currency_code": deal.currency,
            "closedate": deal.close_date.isoformat(),
        }
        if deal.crm_id is not None:
            # The rep's CRM deal: a PATCH by its id (idempotent), tagging it with our id so the
            # CRM side can find the dealflow deal.
            path = f"/crm/v3/objects/deals/{quote(deal.crm_id, safe='')}"
            patch = {"properties": {**properties, self.ID_PROPERTY: deal.deal_id}}
            async with self._http() as http:
                try:
                    data = await self._call(http, "PATCH", path, json=patch)
                    return str(data["id"])
                except CrmRejected as err:
                    if err.status != 404:
                        raise
            # The CRM does not know that id (an id from another system, a typo): closing must
            # not stop on it, so the deal is upserted by our id as if none was given; a retry
            # takes the same path and finds that deal.
            log.warning(
                "CRM has no deal %s (external_id of %s); upserting by %s",
                deal.crm_id,
                deal.deal_id,
                self.ID_PROPERTY,
            )
        body = {
            "inputs": [
                {"idProperty": self.ID_PROPERTY, "id": deal.deal_id, "properties": properties}
            ]
        }
        async with self._http() as http:
            data = await self._call(http, "POST", "/crm/v3/objects/deals/batch/upsert", json=body)
        return str(data["results"][0]["id"])

    async def add_note(self, crm_deal_id: str, *, key: str, body_html: str, at: dt.datetime) -> str:
        if key not in body_html:
            raise ValueError("the note body must contain its key: that is how a retry finds it")
        async with self._http() as http:
            existing = await self._find_note(http, crm_deal_id, key)
            if existing is not None:
                log.info("CRM note %s already on deal %s (key %s)", existing, crm_deal_id, key)
                return existing
            body = {
                "properties": {
                    "hs_note_body": body_html,
                    "hs_timestamp": at.astimezone(dt.UTC).isoformat(),
                },
                "associations": [
                    {
                        "to": {"id": crm_deal_id},
                        "types": [
                            {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": self.NOTE_TO_DEAL,
                            }
                        ],
                    }
                ],
            }
            data = await self._call(http, "POST", "/crm/v3/objects/notes", json=body)
        return str(data["id"])

    async def _find_note(self, http: httpx.AsyncClient, crm_deal_id: str, key: str) -> str | None:
        deal = await self._call(
            http, "GET", f"/crm/v3/objects/deals/{crm_deal_id}", params={"associations": "notes"}
        )
        results = deal.get("associations", {}).get("notes", {}).get("results", [])
        for note_id in dict.fromkeys(str(r["id"]) for r in results):
            note = await self._call(
                http,
                "GET",
                f"/crm/v3/objects/notes/{note_id}",
                params={"properties": "hs_note_body"},
            )
            if key in (note.get("properties", {}).get("hs_note_body") or ""):
                return note_id
        return None

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self._base_url, headers=self._headers, timeout=self._timeout
        )

    async def _call(self, http: httpx.AsyncClient, method: str, path: str, **kw: Any) -> Any:
        response = await http.request(method, path, **kw)
        if response.status_code == 429 or response.status_code >= 500:
            raise CrmUnavailable(f"CRM answered {response.status_code} to {method} {path}")
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text
            raise CrmRejected(response.status_code, f"{method} {path}: {message}")
        return response.json()
