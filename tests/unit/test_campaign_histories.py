"""The replay suite (tests/replay) covers the campaign workflows: histories are committed."""

from __future__ import annotations

import json
from pathlib import Path

HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"


def _type(path: Path) -> str:
    first = json.loads(path.read_text())["events"][0]
    return first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]


def test_campaign_and_sequence_histories_are_committed_for_replay():
    types = {p.stem: _type(p) for p in HISTORIES.glob("*.json")}
    campaign = {n for n, t in types.items() if t == "Campaign"}
    sequence = {n for n, t in types.items() if t == "CampaignSequence"}
    assert {
        "campaign_completed",
        "campaign_paused_resumed",
        "campaign_bounce_paused",
        "campaign_needs_attention_retried",  # parked on enrolment, retried, completed
    } <= campaign
    assert {
        "sequence_three_emails_completed",
        "sequence_replied_interested",
        "sequence_referral",
        "sequence_paused_resumed",
        "sequence_deferred_by_cap",
        "sequence_out_of_office_then_cancelled",
        "sequence_call_and_linkedin_tasks",
        "sequence_needs_attention_retried",  # the send parked, retried, sent once
    } <= sequence
