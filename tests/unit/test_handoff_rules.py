"""The handoff's pure rules: CSM matching, business-day placement, term and renewal dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dealflow.settings import CONFIG_DIR
from domain.handoff import (
    CsmCandidate,
    OnboardingConfig,
    add_business_days,
    add_months,
    customer_timezone,
    due_at,
    kickoff_slot,
    match_csm,
    missing_fields,
    region_of,
    renewal_alert_times,
    segment_of,
    term_end,
)


def _csm(email: str, specialties: str, capacity: int | None, open_: int = 0) -> CsmCandidate:
    return CsmCandidate(email, frozenset(specialties.split()), capacity, open_)


# --- matching ---------------------------------------------------------------------------------


def test_the_csm_with_most_matching_specialties_wins_with_reason_and_runners_up():
    m = match_csm(
        [
            _csm("a@x", "mid-market", 10, 1),
            _csm("b@x", "mid-market amer", 10, 5),
            _csm("c@x", "enterprise emea", 10, 0),
        ],
        segment="mid-market",
        region="amer",
        industry=None,
    )
    assert m.chosen is not None and m.chosen.email == "b@x"
    assert m.chosen.reason == "specialty mid-market, amer matches; 5/10 open handoffs"
    assert [a.email for a in m.alternatives] == ["a@x", "c@x"]
    assert m.alternatives[1].reason.startswith("no matching specialty")


def test_a_tie_goes_to_the_lower_load_then_the_email_deterministically():
    tie = [_csm("z@x", "smb", 10, 2), _csm("y@x", "smb", 20, 2), _csm("x@x", "smb", 20, 2)]
    for order in (tie, list(reversed(tie))):
        m = match_csm(order, segment="smb", region="apac", industry=None)
        # 2/20 beats 2/10; between the two at 2/20 the email decides.
        assert m.chosen is not None and m.chosen.email == "x@x"
        assert [a.email for a in m.alternatives] == ["y@x", "z@x"]


def test_a_csm_at_full_capacity_is_passed_over_and_listed_as_such():
    m = match_csm(
        [_csm("full@x", "fintech mid-market", 3, 3), _csm("free@x", "mid-market", 3, 2)],
        segment="mid-market",
        region="amer",
        industry="fintech",
    )
    assert m.chosen is not None and m.chosen.email == "free@x"
    assert m.alternatives[0].email == "full@x"
    assert m.alternatives[0].reason == "at capacity (3/3 open handoffs)"


def test_nobody_with_the_specialty_or_capacity_means_no_match():
    m = match_csm(
        [_csm("a@x", "enterprise", 10), _csm("b@x", "smb", 1, 1), _csm("lead@x", "smb", None)],
        segment="smb",
        region="apac",
        industry="mining",
    )
    assert m.chosen is None
    assert "no CSM with a matching specialty" in m.reason
    assert {a.email for a in m.alternatives} == {"a@x", "b@x"}  # the lead is not in the pool
    assert match_csm([], segment="smb", region="apac", industry=None).chosen is None


def test_segment_and_region():
    assert segment_of(220, Decimal("47000")) == "mid-market"
    assert segment_of(20, Decimal("150000")) == "enterprise"
    assert segment_of(1500, Decimal("1000")) == "enterprise"
    assert segment_of(None, Decimal("500")) == "smb"
    assert (region_of("US"), region_of("de"), region_of("GB"), region_of("JP")) == (
        "amer",
        "emea",
        "emea",
        "apac",
    )
    assert customer_timezone("US", "CA") == "America/Los_Angeles"
    assert customer_timezone("US", "NY") == "America/New_York"
    assert customer_timezone("DE", None) == "Europe/Berlin"
    assert customer_timezone("DE", None, "Europe/Vienna") == "Europe/Vienna"


def test_missing_fields_name_each_required_field_once():
    required = ("primary_contact", "primary_contact.email", "success_goals")
    signer = {"name": "S", "email": "s@x", "role": "signer"}
    assert [m["field"] for m in missing_fields(required, [signer], [])] == [
        "primary_contact",
        "success_goals",
    ]
    no_email = {"name": "P", "email": None, "role": "primary"}
    assert [m["field"] for m in missing_fields(required, [no_email], ["  "])] == [
        "primary_contact.email",
        "success_goals",
    ]
    full = {"name": "P", "email": "p@x", "role": "primary"}
    assert missing_fields(required, [full], ["Go live"]) == []


# --- business days ----------------------------------------------------------------------------


def test_kickoff_after_a_friday_close_is_monday_10_local():
    start, end = kickoff_slot(
        date(2027, 3, 5), tz="America/New_York", holiday_country="US", local=time(10), minutes=60
    )  # Friday
    local = start.astimezone(ZoneInfo("America/New_York"))
    assert local.date() == date(2027, 3, 8) and (local.hour, local.minute) == (10, 0)
    assert (end - start).total_seconds() == 3600


def test_kickoff_skips_a_holiday_in_the_customers_country():
    # Wednesday 2026-12-23 close: Thursday 24 is a working day in the US, but 25 is Christmas.
    start, _ = kickoff_slot(
        date(2026, 12, 24), tz="America/New_York", holiday_country="US", local=time(10), minutes=60
    )
    assert start.astimezone(ZoneInfo("America/New_York")).date() == date(2026, 12, 28)
    # Germany: 25 and 26 December (a Saturday) are holidays; Friday 25th skipped -> Monday 28th.
    start, _ = kickoff_slot(
        date(2026, 12, 24), tz="Europe/Berlin", holiday_country="DE", local=time(10), minutes=60
    )
    assert start == datetime(2026, 12, 28, 9, 0, tzinfo=UTC)


def test_business_days_cross_weekend_and_holiday():
    # Thursday 2027-07-01 + 2 business days: Friday 2nd, (weekend), Monday 5th is the observed
    # Independence Day (4th is a Sunday) -> Tuesday 6th.
    assert add_business_days(date(2027, 7, 1), 2, "US") == date(2027, 7, 6)
    assert add_business_days(date(2027, 7, 1), 2, None) == date(2027, 7, 5)
    end = due_at(date(2027, 7, 1), 2, tz="America/Chicago", holiday_country="US", local=time(17))
    assert end == datetime(2027, 7, 6, 22, 0, tzinfo=UTC)  # 17:00 CDT


# --- term and renewal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "months", "end"),
    [
        (date(2027, 1, 1), 12, date(2027, 12, 31)),
        (date(2027, 3, 15), 24, date(2029, 3, 14)),
        (date(2027, 6, 1), 36, date(2030, 5, 31)),
        (date(2027, 1, 31), 12, date(2028, 1, 30)),
        (date(2028, 2, 29), 12, date(2029, 2, 27)),  # leap day: Feb 28 next year, minus one
        (date(2027, 8, 31), 36, date(2030, 8, 30)),
    ],
)
def test_term_end_for_12_24_36_months_and_month_ends(start, months, end):
    assert term_end(start, months) == end


def test_add_months_clamps_to_the_month_end():
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2028, 1, 31), 1) == date(2028, 2, 29)
    assert add_months(date(2027, 11, 30), 3) == date(2028, 2, 29)


def test_renewal_alerts_90_60_30_days_before_the_term_end():
    alerts = renewal_alert_times(term_end(date(2027, 3, 31), 12), (30, 90, 60))
    assert alerts == [
        (90, datetime(2027, 12, 31, 9, tzinfo=UTC)),
        (60, datetime(2028, 1, 30, 9, tzinfo=UTC)),
        (30, datetime(2028, 2, 29, 9, tzinfo=UTC)),
    ]


def test_the_committed_onboarding_config_parses_with_a_plan_per_segment():
    cfg = OnboardingConfig.load(CONFIG_DIR / "onboarding.toml")
    assert set(cfg.plans) == {"enterprise", "mid-market", "smb"}
    assert cfg.required[0] == "primary_contact" and cfg.renewal_alert_days == (90, 60, 30)
    owners = {i.owner for plan in cfg.plans.values() for i in plan}
    assert owners <= {"csm", "rep", "support", "customer"}


def test_a_slow_signature_is_counted_in_whole_days_from_the_closure_timeline():
    from workflows.handoff_steps import signature_days

    timeline = [
        {"at": "2027-01-04T10:00:00Z", "event": "stage.awaiting_signature"},
        {"at": "2027-01-20T11:00:00Z", "event": "signature.completed"},
    ]
    assert signature_days(timeline) == 16
    assert signature_days(timeline[:1]) is None


def test_handoff_task_ids_and_message_ids_keep_their_derivation():
    # Rows and sent mail of running handoffs carry these values (the sha256 of what the task or
    # delivery is, computed before they moved to dealflow.ids): a retry must find the same ones.
    from dealflow.ids import handoff_message_id, handoff_task_id, kickoff_message_id

    deal = "deal_0123456789abcdef0123"
    assert handoff_task_id(deal, "onboarding_item", "kickoff") == "hot_06986446ea3af6bb96fa57e8"
    assert (
        handoff_message_id(deal, f"{deal}/package/finance")
        == "<handoff.dba06cde9386231b12fcf88f@dealflow.example>"
    )
    assert kickoff_message_id(deal) == f"<kickoff.{deal}@dealflow.example>"
