"""Send windows, wait days, holidays, DST, business-hour SLAs and sender caps (domain.schedule).

Every expected instant is written in UTC and was worked out by hand from the zone's offset on
that day, so a test failing here means the arithmetic changed, not the fixture.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest

from domain.schedule import (
    SendWindow,
    add_business_hours,
    assign_slot,
    assign_slots,
    daily_cap,
    holidays_for,
    is_business_day,
    local_instant,
    next_send_time,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
KOLKATA = "Asia/Kolkata"
OFFICE = SendWindow(time(9), time(17))
EVERY_DAY = frozenset(range(7))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the window itself ------------------------------------------------------------------------


def test_window_defaults_and_parse_from_the_api_shape():
    assert OFFICE.days == frozenset({0, 1, 2, 3, 4}) and OFFICE.skip_holidays
    parsed = SendWindow.parse(
        {"start": "08:30", "end": "11:00", "days": ["Mon", "wed", "friday"], "skip_holidays": False}
    )
    assert parsed == SendWindow(time(8, 30), time(11), frozenset({0, 2, 4}), False)
    assert SendWindow.parse({"start": "09:00", "end": "17:00"}) == OFFICE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": time(17), "end": time(9)},
        {"start": time(9), "end": time(9)},
        {"start": time(9), "end": time(17), "days": frozenset()},
        {"start": time(9), "end": time(17), "days": frozenset({7})},
    ],
)
def test_invalid_windows_are_rejected(kwargs):
    with pytest.raises(ValueError):
        SendWindow(**kwargs)


def test_naive_after_is_rejected():
    with pytest.raises(ValueError):
        next_send_time(datetime(2026, 3, 2, 10), 0, OFFICE, NY, "US")


# --- wait_days == 0 ---------------------------------------------------------------------------


def test_inside_the_window_sends_now_and_before_it_waits_for_the_opening():
    inside = utc(2026, 3, 31, 8, 15)  # Tue 10:15 CEST
    assert next_send_time(inside, 0, OFFICE, BERLIN, "DE") == inside
    early = utc(2026, 3, 31, 5, 0)  # Tue 07:00 CEST
    assert next_send_time(early, 0, OFFICE, BERLIN, "DE") == utc(2026, 3, 31, 7, 0)


def test_friday_evening_moves_to_monday_across_the_dst_change():
    # Fri 2026-03-06 18:30 EST; New York springs forward on Sunday 03-08, so Monday 09:00 is EDT.
    after = utc(2026, 3, 6, 23, 30)
    assert next_send_time(after, 0, OFFICE, NY, "US") == utc(2026, 3, 9, 13, 0)
    # the same weekday opening a week earlier was still EST
    assert next_send_time(utc(2026, 2, 27, 23, 30), 0, OFFICE, NY, "US") == utc(2026, 3, 2, 14)


def test_window_end_is_exclusive():
    closing = utc(2026, 3, 2, 22, 0)  # Mon 17:00 EST exactly
    assert next_send_time(closing, 0, OFFICE, NY, "US") == utc(2026, 3, 3, 14, 0)


# --- daylight saving --------------------------------------------------------------------------


def test_window_start_in_the_spring_forward_gap_resolves_after_the_gap():
    night = SendWindow(time(2, 30), time(5), EVERY_DAY)
    # New York 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist -> 03:00 EDT
    assert next_send_time(utc(2026, 3, 7, 17), 1, night, NY, None) == utc(2026, 3, 8, 7, 0)
    # Berlin 2026-03-29: 02:00 CET jumps to 03:00 CEST -> 03:00 CEST = 01:00 UTC
    assert next_send_time(utc(2026, 3, 28, 11), 1, night, BERLIN, None) == utc(2026, 3, 29, 1)
    assert local_instant(date(2026, 3, 8), time(2, 30), NY) == utc(2026, 3, 8, 7, 0)


def test_window_start_in_the_fall_back_fold_uses_the_first_occurrence():
    night = SendWindow(time(1, 30), time(4), EVERY_DAY)
    # New York 2026-11-01: 01:30 happens twice; the first is EDT (UTC-4) -> 05:30 UTC
    assert next_send_time(utc(2026, 10, 31, 16), 1, night, NY, None) == utc(2026, 11, 1, 5, 30)
    late = SendWindow(time(2, 30), time(4), EVERY_DAY)
    # Berlin 2026-10-25: 02:30 happens twice; the first is CEST (UTC+2) -> 00:30 UTC
    assert next_send_time(utc(2026, 10, 24, 10), 1, late, BERLIN, None) == utc(2026, 10, 25, 0, 30)


def test_ordinary_window_on_the_dst_days_uses_the_new_offset():
    every_day = SendWindow(time(9), time(17), EVERY_DAY)
    assert next_send_time(utc(2026, 3, 7, 23), 0, every_day, NY, None) == utc(2026, 3, 8, 13)
    assert next_send_time(utc(2026, 10, 31, 23), 0, every_day, NY, None) == utc(2026, 11, 1, 14)
    assert next_send_time(utc(2026, 3, 28, 20), 0, every_day, BERLIN, None) == utc(2026, 3, 29, 7)
    assert next_send_time(utc(2026, 10, 24, 20), 0, every_day, BERLIN, None) == utc(2026, 10, 25, 8)


# --- a contact in India (UTC+05:30, no DST) ---------------------------------------------------


def test_kolkata_uses_the_local_date_and_indian_holidays():
    # Tue 2026-03-03 17:30 IST is after the window; Wed 03-04 is Holi -> Thu 09:00 IST
    assert next_send_time(utc(2026, 3, 3, 12), 0, OFFICE, KOLKATA, "IN") == utc(2026, 3, 5, 3, 30)
    # Thu 20:00 UTC is already Friday 01:30 in Kolkata: one window day later is Monday
    assert next_send_time(utc(2026, 3, 5, 20), 1, OFFICE, KOLKATA, "IN") == utc(2026, 3, 9, 3, 30)
    inside = utc(2026, 3, 6, 4, 0)  # Fri 09:30 IST
    assert next_send_time(inside, 0, OFFICE, KOLKATA, "IN") == inside


# --- holidays and wait_days -------------------------------------------------------------------


def test_thanksgiving_is_skipped_unless_the_step_says_not_to():
    wednesday = utc(2026, 11, 25, 15)  # Wed 10:00 EST
    assert next_send_time(wednesday, 1, OFFICE, NY, "US") == utc(2026, 11, 27, 14)
    keep_holidays = SendWindow(time(9), time(17), skip_holidays=False)
    assert next_send_time(wednesday, 1, keep_holidays, NY, "US") == utc(2026, 11, 26, 14)


def test_wait_days_count_window_days_across_a_holiday_and_a_weekend():
    # from Wed 11-25: Thu (Thanksgiving) no, Fri 1, Sat/Sun no, Mon 2, Tue 3
    assert next_send_time(utc(2026, 11, 25, 15), 3, OFFICE, NY, "US") == utc(2026, 12, 1, 14)
    # no country: Thanksgiving counts -> Thu 1, Fri 2, Mon 3
    assert next_send_time(utc(2026, 11, 25, 15), 3, OFFICE, NY, None) == utc(2026, 11, 30, 14)


def test_a_saturday_holiday_changes_nothing_on_a_weekday_window():
    # Tag der Deutschen Einheit 2026-10-03 is a Saturday
    assert date(2026, 10, 3) in holidays_for("DE", 2026)
    assert not is_business_day(date(2026, 10, 3), OFFICE, "DE")
    friday = utc(2026, 10, 2, 8)  # Fri 10:00 CEST
    assert next_send_time(friday, 1, OFFICE, BERLIN, "DE") == utc(2026, 10, 5, 7)
    # ...but it closes a window that includes Saturdays, unless holidays are not skipped
    mon_sat = frozenset(range(6))
    assert not is_business_day(date(2026, 10, 3), SendWindow(time(9), time(17), mon_sat), "DE")
    assert is_business_day(date(2026, 10, 3), SendWindow(time(9), time(17), mon_sat, False), "DE")


def test_unknown_country_and_subdivisions():
    assert holidays_for("XX", 2026) == frozenset()
    assert is_business_day(date(2026, 11, 26), OFFICE, "XX")
    assert not is_business_day(date(2026, 11, 26), OFFICE, "us")
    assert date(2026, 1, 6) in holidays_for("DE-BY", 2026)  # Epiphany in Bavaria only
    assert date(2026, 1, 6) not in holidays_for("DE", 2026)
    assert holidays_for("DE-ZZ", 2026) == holidays_for("DE", 2026)


def test_negative_wait_is_rejected():
    with pytest.raises(ValueError):
        next_send_time(utc(2026, 3, 2, 15), -1, OFFICE, NY, "US")


# --- business-hour SLAs -----------------------------------------------------------------------


def test_business_hours_run_across_the_weekend_and_the_dst_change():
    friday_3pm = utc(2026, 3, 6, 20)  # Fri 15:00 EST
    # 2 h on Friday, 2 h on Monday (now EDT): Mon 11:00 EDT
    assert add_business_hours(friday_3pm, 4, NY) == utc(2026, 3, 9, 15)


def test_business_hours_edge_cases():
    monday_9 = utc(2026, 3, 2, 14)
    assert add_business_hours(monday_9, 8, NY) == utc(2026, 3, 2, 22)  # ends at closing time
    saturday = utc(2026, 3, 7, 15)
    assert add_business_hours(saturday, 1.5, NY) == utc(2026, 3, 9, 14, 30)
    assert add_business_hours(monday_9, 0.25, NY, day_start=time(8), day_end=time(18)) == utc(
        2026, 3, 2, 14, 15
    )
    with pytest.raises(ValueError):
        add_business_hours(monday_9, -1, NY)


def test_business_hours_skip_holidays_only_for_a_country():
    wednesday_4pm = utc(2026, 11, 25, 21)
    assert add_business_hours(wednesday_4pm, 3, NY, country="US") == utc(2026, 11, 27, 16)
    assert add_business_hours(wednesday_4pm, 3, NY) == utc(2026, 11, 26, 16)


# --- sender caps ------------------------------------------------------------------------------


def test_warmup_ramps_by_week_and_never_exceeds_the_base_limit():
    first = date(2026, 3, 2)
    caps = [daily_cap(200, first, first + timedelta(days=d)) for d in (0, 6, 7, 14, 21, 28, 35)]
    assert caps == [20, 20, 40, 80, 150, 200, 200]
    assert daily_cap(1000, first, first + timedelta(days=28)) == 300
    assert daily_cap(1000, first, first + timedelta(days=35)) == 1000
    assert daily_cap(10, None, first) == 10
    assert daily_cap(500, None, first) == 20
    assert daily_cap(500, first, first - timedelta(days=3)) == 20
    assert daily_cap(500, first, first, warmup=()) == 500
    with pytest.raises(ValueError):
        daily_cap(-1, first, first)


def test_send_under_the_cap_keeps_its_time_and_outside_the_window_moves_to_the_opening():
    tuesday_10 = utc(2026, 3, 3, 15)
    assert assign_slot(tuesday_10, {}, lambda d: 5, OFFICE, NY, "US") == tuesday_10
    tuesday_7am = utc(2026, 3, 3, 12)
    assert assign_slot(tuesday_7am, {}, lambda d: 5, OFFICE, NY, "US") == utc(2026, 3, 3, 14)


def test_overflow_moves_to_the_next_window_in_order():
    tue = date(2026, 3, 3)
    requests = [utc(2026, 3, 3, 15, m) for m in (0, 5, 10, 15, 20)]  # Tue 10:00..10:20 EST
    shuffled = requests[:]
    random.Random(7).shuffle(shuffled)
    slots = assign_slots(shuffled, {tue: 1}, lambda d: 2, OFFICE, NY, "US")
    by_request = dict(zip(shuffled, slots, strict=True))
    assert [by_request[r] for r in requests] == [
        utc(2026, 3, 3, 15, 0),  # one slot left on Tuesday
        utc(2026, 3, 4, 14),  # Wednesday opening, twice
        utc(2026, 3, 4, 14),
        utc(2026, 3, 5, 14),  # Thursday opening, twice
        utc(2026, 3, 5, 14),
    ]
    ordered = [by_request[r] for r in requests]
    assert ordered == sorted(ordered)


def test_overflow_with_warmup_skips_weekends_and_holidays():
    first = date(2026, 11, 23)  # a new mailbox: 2 a day in its first week
    cap = lambda d: daily_cap(100, first, d, warmup=(2, 4))  # noqa: E731
    wed = utc(2026, 11, 25, 15)
    slots = assign_slots([wed] * 5, {date(2026, 11, 25): 2}, cap, OFFICE, NY, "US")
    # Wednesday is full; Thursday is Thanksgiving; Friday takes 2; Monday (week 2) takes the rest
    assert slots == [utc(2026, 11, 27, 14)] * 2 + [utc(2026, 11, 30, 14)] * 3


def test_cap_days_can_be_counted_in_the_senders_zone():
    # contact in Kolkata, sender in New York: Mon 09:00 IST is Sun 22:30 EST for the sender
    counts = {date(2026, 3, 1): 3}
    slot = assign_slot(
        utc(2026, 3, 2, 3, 30), counts, lambda d: 3, OFFICE, KOLKATA, "IN", cap_tz=NY
    )
    assert slot == utc(2026, 3, 3, 3, 30)
    assert assign_slot(utc(2026, 3, 2, 3, 30), counts, lambda d: 3, OFFICE, KOLKATA, "IN") == utc(
        2026, 3, 2, 3, 30
    )


def test_a_cap_that_never_opens_fails_loudly():
    with pytest.raises(ValueError):
        assign_slot(utc(2026, 3, 3, 15), {}, lambda d: 0, OFFICE, NY, "US")
