"""The API's side of the signature tracking workflow: DocuSign Connect events."""

from __future__ import annotations

from temporalio.client import Client

from dealflow.ids import signature_workflow_id
from messages.signature import ConnectEvent
from workflows.signature import SignatureWorkflow


async def connect_event(
    client: Client, deal_id: str, quote_version: int, event: ConnectEvent
) -> None:
    """Hand a Connect message to the tracking of that quote version (``RPCError`` NOT_FOUND when
    it has ended or never existed)."""
    handle = client.get_workflow_handle(signature_workflow_id(deal_id, quote_version))
    await handle.signal(SignatureWorkflow.connect_event, event)
