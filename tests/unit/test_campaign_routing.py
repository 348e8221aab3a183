"""How a classified reply is routed, and when an out-of-office pause ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.campaign_rules import REPLY_ROUTES, auto_reply_resume_at, reply_route
from domain.replies import KINDS

NY = "America/New_York"
BERLIN = "Europe/Berlin"
RECEIVED = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # a Friday


def _resume(return_date, tz=NY, country="US", received=RECEIVED):
    return auto_reply_resume_at(return_date, received, tz, country, default_days=7, max_days=30)


def test_every_classification_kind_has_a_route_and_only_auto_replies_pause():
    assert set(REPLY_ROUTES) == set(KINDS)
    assert {k for k, r in REPLY_ROUTES.items() if r.action == "pause"} == {"auto_reply"}


@pytest.mark.parametrize(
    ("kind", "bounce", "suppress", "all_senders", "notify", "task", "referral"),
    [
        ("unsubscribe", None, "unsubscribed", False, False, False, False),
        ("complaint", None, "complaint", True, False, False, False),
        ("bounce", "hard", "hard_bounce", True, False, False, False),
        ("bounce", "soft", None, False, False, False, False),
        ("interested", None, None, False, True, True, False),
        ("meeting_request", None, None, False, True, True, False),
        ("question", None, None, False, True, True, False),
        ("objection", None, None, False, True, True, False),
        ("not_interested", None, None, False, False, False, False),
        ("referral", None, None, False, False, False, True),
    ],
)
def test_routes(kind, bounce, suppress, all_senders, notify, task, referral):
    route = reply_route(kind, bounce)
    assert route.action == "stop"
    assert route.suppress == suppress
    assert route.suppress_all_senders is all_senders
    assert (route.notify, route.task, route.referral) == (notify, task, referral)


def test_resume_is_the_next_business_day_after_the_return_date_at_nine_local():
    # Back Monday 23 Nov: resume Tuesday 24 Nov, 09:00 New York (EST, UTC-5).
    assert _resume(date(2026, 11, 23)) == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    # Back Friday 27 Nov: the next business day is Monday 30 Nov.
    assert _resume(date(2026, 11, 27)) == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    # Back Wednesday 25 Nov: Thursday 26 is Thanksgiving, so Friday 27.
    assert _resume(date(2026, 11, 25)) == datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


def test_resume_follows_the_contacts_zone_and_country_across_dst():
    # Back Friday 27 March 2026 in Berlin; Monday 30 March is after the spring change (CEST).
    received = datetime(2026, 3, 20, 9, tzinfo=UTC)
    assert _resume(date(2026, 3, 27), BERLIN, "DE", received) == datetime(
        2026, 3, 30, 7, 0, tzinfo=UTC
    )
    # German Easter Monday (6 April 2026) is skipped: back on Good Friday the 3rd -> Tuesday.
    assert _resume(date(2026, 4, 3), BERLIN, "DE", received) == datetime(
        2026, 4, 7, 7, 0, tzinfo=UTC
    )


def test_resume_without_a_date_uses_the_default_and_is_capped_at_thirty_days():
    assert _resume(None) == RECEIVED + timedelta(days=7)
    assert _resume(date(2027, 6, 1)) == RECEIVED + timedelta(days=30)


def test_a_return_date_in_the_past_resumes_at_once():
    assert _resume(date(2026, 11, 2)) == RECEIVED
