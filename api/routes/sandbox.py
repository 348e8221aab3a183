"""``/_sandbox``: act as the other party locally. Mounted only in the sandbox profile.

``/_sandbox/config`` is answered here; every other ``/_sandbox`` path is proxied to the sandbox
process (Slack, DocuSign, CRM and mail stand-ins), so one port serves a person or a test.
"""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response

from api.deps import SettingsDep
from api.errors import ApiError
from db.org import OrgDirectory

router = APIRouter(prefix="/_sandbox", tags=["sandbox"])


@router.get("/config")
async def sandbox_config(settings: SettingsDep) -> dict:
    """Who you can act as (with their API keys) and the sandbox's dev-only secrets."""
    org = OrgDirectory.load(settings.org_directory_path)
    keys = {k["email"]: k["key"] for k in settings.sandbox_file.get("api_keys", [])}
    return {
        "people": [
            {
                "email": p["email"],
                "name": p["name"],
                "title": p.get("title"),
                "roles": p.get("roles", []),
                "approver_roles": p.get("approver_roles", []),
                "api_key": keys.get(p["email"]),
            }
            for p in org.people
        ],
        "secrets": {
            name: settings.secret(name)
            for name in (
                "slack_signing_secret",
                "docusign_connect_hmac_key",
                "stripe_webhook_secret",
                "mail_webhook_secret",
            )
        },
    }


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def proxy(path: str, request: Request, settings: SettingsDep) -> Response:
    """Forward to the sandbox process beside the API."""
    client: httpx.AsyncClient = request.app.state.sandbox_http
    try:
        upstream = await client.request(
            request.method,
            f"{settings.sandbox_url}/_sandbox/{path}",
            params=request.query_params,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
    except httpx.HTTPError as err:
        raise ApiError(
            503, "sandbox_unavailable", f"The sandbox process is not reachable: {err}"
        ) from None
    return Response(
        upstream.content,
        status_code=upstream.status_code,
        media_type=upstream.headers.get("content-type"),
    )
