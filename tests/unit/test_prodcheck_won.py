"""prod-check's idea of a won deal (dealflow/prodcheck.py).

The closure records closed_won and about a tenth of a second later handoff; prod-check once
waited for closed_won alone, missed that window and failed its 240 s hang guard on a deal that
was done. These pin what it accepts now: either stage, with the CRM deal, the invoice and
closed_won on the timeline; and what it calls handed over.
"""

from __future__ import annotations

from dealflow.prodcheck import handed_over, won


def deal(stage: str, *, events: tuple[str, ...] = (), invoice: str | None = "in_1", **kw) -> dict:
    return {
        "stage": stage,
        "billing": {"stripe_invoice_id": invoice} if invoice else None,
        "crm": {"status": "closed_won"},
        "timeline": [{"at": "2026-12-01T12:08:57Z", "event": e} for e in events],
        **kw,
    }


WON_EVENTS = ("stage.awaiting_signature", "stage.closed_won")


def test_a_deal_already_in_handoff_is_won() -> None:
    assert won(deal("handoff", events=(*WON_EVENTS, "stage.handoff")))


def test_a_deal_in_closed_won_is_won() -> None:
    assert won(deal("closed_won", events=WON_EVENTS))


def test_not_won_without_closed_won_on_the_timeline_or_before_billing() -> None:
    assert not won(deal("handoff", events=("stage.handoff",)))
    assert not won(deal("closed_won", events=WON_EVENTS, invoice=None))
    assert not won(deal("awaiting_signature", events=("stage.awaiting_signature",)))


def test_handed_over_needs_the_stage_and_the_handoff_record() -> None:
    assert handed_over(deal("handoff", handoff={"status": "collecting"}))
    assert not handed_over(deal("handoff", handoff=None))
    assert not handed_over(deal("closed_won", handoff={"status": "collecting"}))
