"""``/v1/documents/{id}``: download a rendered contract document (PDF, or HTML)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.access import approvers_of, owns_or_operates
from api.closure import closure_status
from api.deps import CurrentPerson, SessionDep, SettingsDep, TemporalDep
from api.errors import ApiError
from db import deals as deals_db

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.get("/{document_id}", response_class=FileResponse)
async def download_document(
    document_id: str,
    person: CurrentPerson,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    format: Literal["pdf", "html"] = "pdf",
) -> FileResponse:
    """The stored file, with its sha256 in the ETag (readers of the deal only)."""
    doc = await deals_db.get_document(session, document_id=document_id)
    if doc is None:
        raise ApiError(404, "not_found", f"Document {document_id} does not exist.")
    deal = await deals_db.get_deal(session, deal_id=doc.deal_id)
    assert deal is not None
    if not (
        owns_or_operates(person, deal)
        or person.email
        in await approvers_of(session, deal.id, await closure_status(temporal, deal.id))
    ):
        raise ApiError(403, "forbidden", "Only readers of the deal may download its documents.")
    if format == "html":
        path, media, etag = doc.html_storage_ref, "text/html; charset=utf-8", doc.html_sha256
    else:
        path, media, etag = doc.storage_ref, doc.content_type, doc.sha256
    full = settings.document_dir / path
    if not full.is_file():
        raise ApiError(404, "not_found", "The document's file is missing from storage.")
    return FileResponse(
        full,
        media_type=media,
        filename=f"{doc.kind}-v{doc.version}.{format}",
        headers={"ETag": f'"{etag}"'},
    )
