"""Names that must agree between the API, the worker, the dev server and the tests.

Defined once here and imported everywhere: a task-queue or search-attribute typo would otherwise
fail silently (work queued where nobody polls, a search that never matches).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from temporalio.common import SearchAttributeKey

TASK_QUEUE = "dealflow"

DEAL_CLOSURE_PREFIX = "deal-closure/"


def deal_closure_workflow_id(deal_id: str) -> str:
    """One closure per deal: the id is derived from the deal so a second start cannot fork it."""
    return f"{DEAL_CLOSURE_PREFIX}{deal_id}"


def approval_chain_workflow_id(deal_id: str, quote_version: int) -> str:
    """One approval chain per quote version of a deal."""
    return f"approval-chain/{deal_id}/v{quote_version}"


CAMPAIGN_PREFIX = "campaign/"


def campaign_workflow_id(campaign_id: str) -> str:
    """One campaign workflow per campaign: launching twice cannot start a second."""
    return f"{CAMPAIGN_PREFIX}{campaign_id}"


def sequence_workflow_id(campaign_id: str, contact_email: str) -> str:
    """One sequence per contact and campaign; with id reuse rejected, never enrolled twice."""
    return f"{CAMPAIGN_PREFIX}{campaign_id}/contact/{contact_email.strip().lower()}"


def signature_workflow_id(deal_id: str, quote_version: int) -> str:
    """One signature tracking (one envelope) per quote version of a deal."""
    return f"signature/{deal_id}/v{quote_version}"


def handoff_workflow_id(deal_id: str) -> str:
    """One handoff per won deal."""
    return f"handoff/{deal_id}"


# Search attributes the Temporal UI filters on (registered at dev-server start and in compose).
SA_DEAL_ID = SearchAttributeKey.for_keyword("DealId")
SA_CUSTOMER = SearchAttributeKey.for_keyword("Customer")
SA_DEAL_STAGE = SearchAttributeKey.for_keyword("DealStage")
SA_DEAL_AMOUNT = SearchAttributeKey.for_float("DealAmount")
SA_OWNER_EMAIL = SearchAttributeKey.for_keyword("OwnerEmail")
SA_CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
# Set to "needs_attention" while a campaign or sequence workflow is parked (unset otherwise).
SA_CAMPAIGN_STATUS = SearchAttributeKey.for_keyword("CampaignStatus")
# The handoff's own status (collecting, needs_attention, ..., live), next to DealStage = handoff.
SA_HANDOFF_STATUS = SearchAttributeKey.for_keyword("HandoffStatus")

SEARCH_ATTRIBUTES = (
    SA_DEAL_ID,
    SA_CUSTOMER,
    SA_DEAL_STAGE,
    SA_DEAL_AMOUNT,
    SA_OWNER_EMAIL,
    SA_CAMPAIGN_ID,
    SA_CAMPAIGN_STATUS,
    SA_HANDOFF_STATUS,
)


def search_attribute_cli_args() -> list[str]:
    """`temporal server start-dev --search-attribute Name=Type ...` arguments."""
    kinds = {"KEYWORD": "Keyword", "DOUBLE": "Double", "TEXT": "Text", "INT": "Int"}
    args: list[str] = []
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}"]
    return args


# Handoff

# The handoff workflow's type name: the closure's start_handoff activity starts it by this name
# (an activity does not import the workflow that calls it), and @workflow.defn declares it.
HANDOFF_WORKFLOW = "Handoff"

# Every handoff task id (onboarding items, renewal alerts, the CS lead's task) has this prefix,
# so GET /v1/tasks knows the source of an id (db/tasks.py).
HANDOFF_TASK_PREFIX = "hot_"


def _handoff_digest(deal_id: str, kind: str, key: str) -> str:
    return hashlib.sha256(f"{deal_id}/{kind}/{key}".encode()).hexdigest()[:24]


def handoff_task_id(deal_id: str, kind: str, key: str) -> str:
    """Derived from what the task is, so a retried activity makes the same row."""
    return f"{HANDOFF_TASK_PREFIX}{_handoff_digest(deal_id, kind, key)}"


def handoff_message_id(deal_id: str, key: str) -> str:
    """The Message-ID of a handoff email, derived from its delivery key: the same on a retry."""
    return f"<handoff.{_handoff_digest(deal_id, 'mail', key)}@dealflow.example>"


def kickoff_message_id(deal_id: str) -> str:
    """The kickoff invite's Message-ID: one invite per handoff."""
    return f"<kickoff.{deal_id}@dealflow.example>"


# Campaigns


def message_id_for(campaign_id: str, contact_email: str, step_index: int, sender_email: str) -> str:
    """The stable Message-ID (without <>) of a contact's step: the send's idempotency key.

    Made in the sequence workflow, so a retried (or re-run) send carries the same one.
    """
    digest = hashlib.sha256(
        f"{campaign_id}\x1f{contact_email.strip().lower()}\x1f{step_index}".encode()
    ).hexdigest()[:32]
    domain = sender_email.rsplit("@", 1)[-1].lower()
    return f"cmp.{digest}@{domain}"


def task_id_for(*parts: object) -> str:
    """A rep task's id; deterministic, so a retried create converges on one task."""
    return "tsk_" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def failure_key(campaign_id: str, contact_email: str | None = None) -> str:
    """The business key the poison tests arm a failure point with: the campaign's id, or the
    contact's sequence workflow id."""
    return sequence_workflow_id(campaign_id, contact_email) if contact_email else campaign_id


# Deals and approvals


def approval_step_id(deal_id: str, quote_version: int, stage: int, role: str) -> str:
    """One approval step per role, stage and quote version: the chain's and the audit's key."""
    return f"{deal_id}.v{quote_version}.s{stage}.{role}"


def deal_of_approval_step(step_id: str) -> str | None:
    """The deal an approval step id names (None for ids not made by ``approval_step_id``)."""
    return step_id.split(".")[0] if step_id.startswith("deal_") else None


def approval_delivery_key(step_id: str, recipient: str, purpose: str) -> str:
    """One delivery (and one signed link) per step, recipient and purpose."""
    return hashlib.sha256(f"{step_id}|{recipient}|{purpose}".encode()).hexdigest()[:32]


def document_id(deal_id: str, kind: str, version: int) -> str:
    """Deterministic, so a retried render (or signed copy) converges on the same row and file."""
    return "doc_" + hashlib.sha256(f"{deal_id}/{kind}/{version}".encode()).hexdigest()[:24]


def envelope_key(deal_id: str, quote_version: int) -> str:
    """Our key of a DocuSign envelope (a hidden custom field): one envelope per quote version."""
    return f"{deal_id}.v{quote_version}"


def connect_event_key(payload: dict[str, Any]) -> str:
    """A stable identity for a DocuSign Connect message, to drop duplicates."""
    data = payload.get("data") or {}
    return hashlib.sha256(
        json.dumps(
            [
                payload.get("event"),
                data.get("envelopeId"),
                data.get("recipientId"),
                payload.get("generatedDateTime"),
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:32]
