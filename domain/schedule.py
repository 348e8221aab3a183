"""When a campaign step may send: send windows, business days, holidays, sender caps.

Campaign steps wait ``wait_days`` counted on the days of the step's send window (Monday to
Friday by default) in the *contact's* time zone, skipping the public holidays of the contact's
country, and then send at the next opening of that window. Everything here is pure and
deterministic (no clock, no randomness, no I/O) so workflow code can call it and replays agree:
the caller always passes "now" in, and the holiday calendars come from the ``holidays`` package,
which computes them from rules rather than fetching them.

Time-zone arithmetic is done on UTC instants, and wall-clock times are turned into instants in one
place (:func:`local_instant`) that spells out what happens on daylight-saving days: a wall time in
a spring-forward gap moves to the first valid instant after the gap, and an ambiguous wall time on
a fall-back day means its first occurrence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

__all__ = [
    "DAY_NAMES",
    "DEFAULT_WARMUP",
    "WEEKDAYS",
    "SendWindow",
    "add_business_hours",
    "assign_slot",
    "assign_slots",
    "daily_cap",
    "holidays_for",
    "is_business_day",
    "local_instant",
    "next_send_time",
    "window_bounds",
]

WEEKDAYS: frozenset[int] = frozenset(range(5))
"""Monday to Friday, as ``date.weekday()`` numbers (0 = Monday)."""

DAY_NAMES: dict[str, int] = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
"""The day names the API accepts in ``send_window.days``."""

DEFAULT_WARMUP: tuple[int, ...] = (20, 40, 80, 150, 300)
"""Daily sends allowed in the first, second, ... week of a new sender mailbox."""

# A bound on day-by-day searches, so a window that can never open (every day a holiday, which no
# real calendar does) fails loudly instead of looping forever.
_MAX_DAYS_SEARCHED = 3 * 366


@dataclass(frozen=True)
class SendWindow:
    """The local hours and week days in which a step may send.

    The window is the half-open interval ``[start, end)`` of wall-clock time on each of ``days``
    (0 = Monday .. 6 = Sunday). Windows do not cross midnight: a campaign that wants evening and
    early-morning sends uses two steps, which keeps "the window's day" unambiguous when counting
    ``wait_days``. ``skip_holidays`` makes the contact's public holidays non-window days.
    """

    start: time
    end: time
    days: frozenset[int] = WEEKDAYS
    skip_holidays: bool = True

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("send window times are wall-clock times: give them without tzinfo")
        if not self.start < self.end:
            raise ValueError("a send window must end after it starts on the same day")
        if not self.days:
            raise ValueError("a send window needs at least one day")
        if any(d not in range(7) for d in self.days):
            raise ValueError("send window days are 0 (Monday) to 6 (Sunday)")
        object.__setattr__(self, "days", frozenset(self.days))

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> SendWindow:
        """Build a window from the API's ``send_window`` object.

        ``{"start": "09:00", "end": "17:00", "days"?: ["mon", ...], "skip_holidays"?: true}``;
        kept here so the API and the workflow read a window the same way.
        """
        days_raw = data.get("days")
        if days_raw is None:
            days = WEEKDAYS
        else:
            if not isinstance(days_raw, Iterable) or isinstance(days_raw, str | bytes):
                raise ValueError("send_window.days must be a list of day names")
            try:
                days = frozenset(DAY_NAMES[str(d).strip().lower()[:3]] for d in days_raw)
            except KeyError as exc:
                raise ValueError(f"unknown day name in send_window.days: {exc.args[0]}") from None
        return cls(
            start=time.fromisoformat(str(data["start"])),
            end=time.fromisoformat(str(data["end"])),
            days=days,
            skip_holidays=bool(data.get("skip_holidays", True)),
        )


# --- holidays ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def holidays_for(country: str, year: int) -> frozenset[date]:
    """The public holidays of ``country`` in ``year`` (cached; the calendars are pure rules).

    ``country`` is an ISO 3166-1 alpha-2 code, optionally with a subdivision ("DE-BY", "US-CA")
    for regional holidays. An unknown code yields no holidays rather than an error: a contact's
    country is free text from an import, and a typo must not stop a campaign.
    """
    code, _, subdiv = country.strip().upper().partition("-")
    if not code:
        return frozenset()
    try:
        calendar = holidays.country_holidays(code, subdiv=subdiv or None, years=year)
    except (NotImplementedError, KeyError, ValueError):
        if not subdiv:
            return frozenset()
        try:  # unknown subdivision: fall back to the national holidays
            calendar = holidays.country_holidays(code, years=year)
        except (NotImplementedError, KeyError, ValueError):
            return frozenset()
    return frozenset(calendar.keys())


def _is_holiday(d: date, country: str | None) -> bool:
    return bool(country) and d in holidays_for(str(country), d.year)


def is_business_day(d: date, window: SendWindow, country: str | None) -> bool:
    """Whether ``d`` is one of the window's days (and not a skipped public holiday)."""
    if d.weekday() not in window.days:
        return False
    return not (window.skip_holidays and _is_holiday(d, country))


# --- wall clock to instants -------------------------------------------------------------------


def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _require_aware(dt: datetime, name: str) -> None:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def local_instant(d: date, t: time, tz: str) -> datetime:
    """The UTC instant at which the wall clock in ``tz`` shows ``t`` on ``d``.

    On a fall-back day an ambiguous time means its first occurrence (``fold=0``). On a
    spring-forward day a time inside the gap does not exist; it resolves to the first valid instant
    after the gap (02:30 in New York on 2026-03-08 is 03:00 EDT), not to the "same offset as
    before" reading that plain ``zoneinfo`` arithmetic would give (03:30).
    """
    zone = _zone(tz)
    naive = datetime.combine(d, t)
    first = naive.replace(tzinfo=zone, fold=0)
    as_utc = first.astimezone(UTC)
    if as_utc.astimezone(zone).replace(tzinfo=None) == naive:
        return as_utc
    # In a gap: fold=0 reads the wall time with the offset before the transition, fold=1 with
    # the offset after it; the transition instant lies between the two readings. Transitions
    # happen on whole seconds, so search the integer seconds between them for the first one that
    # already has the new offset.
    other = naive.replace(tzinfo=zone, fold=1)
    after_offset = other.utcoffset()
    lo_s, hi_s = sorted((int(as_utc.timestamp()), int(other.astimezone(UTC).timestamp())))
    hi_s += 1
    while lo_s < hi_s:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(zone).utcoffset() == after_offset:
            hi_s = mid
        else:
            lo_s = mid + 1
    return datetime.fromtimestamp(lo_s, UTC)


def window_bounds(d: date, window: SendWindow, tz: str) -> tuple[datetime, datetime]:
    """The UTC instants at which the window opens and closes on local day ``d``."""
    return local_instant(d, window.start, tz), local_instant(d, window.end, tz)


# --- send times -------------------------------------------------------------------------------


def _eligible_days(start: date, window: SendWindow, country: str | None) -> Iterator[date]:
    """Window days from ``start`` on (inclusive), bounded so a bad calendar cannot hang us."""
    for offset in range(_MAX_DAYS_SEARCHED):
        d = start + timedelta(days=offset)
        if is_business_day(d, window, country):
            yield d
    raise ValueError("the send window never opens within three years")


def next_send_time(
    after: datetime, wait_days: int, window: SendWindow, tz: str, country: str | None
) -> datetime:
    """When a step that became due at ``after`` should send, as an aware UTC datetime.

    ``wait_days`` window days (window weekdays that are not skipped holidays) are counted forward
    from ``after``'s local date in ``tz``, and the step sends when the window opens on the day
    reached. With ``wait_days == 0`` the step sends at ``after`` itself if that is inside an open
    window, otherwise at the next opening (later today, or on the next window day).
    """
    _require_aware(after, "after")
    if wait_days < 0:
        raise ValueError("wait_days must not be negative")
    after = after.astimezone(UTC)
    today = after.astimezone(_zone(tz)).date()
    if wait_days == 0:
        for d in _eligible_days(today, window, country):
            opens, closes = window_bounds(d, window, tz)
            if after < closes:
                return max(after, opens)
        raise AssertionError("unreachable")  # pragma: no cover
    counted = 0
    for d in _eligible_days(today + timedelta(days=1), window, country):
        counted += 1
        if counted == wait_days:
            return max(after, window_bounds(d, window, tz)[0])
    raise AssertionError("unreachable")  # pragma: no cover


def add_business_hours(
    start: datetime,
    hours: float,
    tz: str,
    *,
    day_start: time = time(9),
    day_end: time = time(17),
    days: frozenset[int] = WEEKDAYS,
    country: str | None = None,
) -> datetime:
    """The aware UTC instant at which ``hours`` of business time have elapsed since ``start``.

    Used for approval SLAs ("4 business hours"): only time inside ``[day_start, day_end)`` on
    ``days`` in ``tz`` counts, and the public holidays of ``country`` if one is given. Elapsed time
    is measured on real instants, so an hour lost or gained to DST inside business hours counts as
    the hour that really passed. An SLA that runs out exactly at closing time ends at closing time.
    """
    _require_aware(start, "start")
    if hours < 0:
        raise ValueError("hours must not be negative")
    window = SendWindow(day_start, day_end, frozenset(days), skip_holidays=country is not None)
    remaining = timedelta(hours=hours)
    cursor = start.astimezone(UTC)
    first_day = cursor.astimezone(_zone(tz)).date()
    for d in _eligible_days(first_day, window, country):
        opens, closes = window_bounds(d, window, tz)
        cursor = max(cursor, opens)
        if cursor >= closes:
            continue
        available = closes - cursor
        if remaining <= available:
            return cursor + remaining
        remaining -= available
    raise AssertionError("unreachable")  # pragma: no cover


# --- sender limits ----------------------------------------------------------------------------


def daily_cap(
    base_limit: int,
    first_send_date: date | None,
    on: date,
    warmup: tuple[int, ...] = DEFAULT_WARMUP,
) -> int:
    """How many messages a sender mailbox may send on ``on``.

    A new mailbox that suddenly sends its full volume looks like a spammer to receiving
    providers, so the limit ramps up by week since its first send: ``warmup[0]`` in the first
    week, ``warmup[1]`` in the second, and ``base_limit`` once the ramp is over. The ramp never
    raises the limit above ``base_limit``. A mailbox that has never sent is in its first week.
    """
    if base_limit < 0:
        raise ValueError("base_limit must not be negative")
    if any(step < 0 for step in warmup):
        raise ValueError("warm-up limits must not be negative")
    week = 0 if first_send_date is None else max(0, (on - first_send_date).days // 7)
    if week < len(warmup):
        return min(warmup[week], base_limit)
    return base_limit


def assign_slot(
    requested: datetime,
    sent_per_day: Mapping[date, int],
    cap_for: Callable[[date], int],
    window: SendWindow,
    tz: str,
    country: str | None,
    *,
    cap_tz: str | None = None,
) -> datetime:
    """The send time for a message requested at ``requested``, respecting the sender's daily cap.

    The message goes at ``requested`` (or the window's next opening if that is outside the
    window) unless the sender has already used its cap that day; then it moves to the next window
    opening, and on, until a day with room. ``sent_per_day`` counts sends by the local date in
    ``cap_tz`` (the sender mailbox's zone; defaults to ``tz``, the contact's zone used for the
    window), and ``cap_for`` gives that day's cap (see :func:`daily_cap`).

    Calling this for the day's sends in request order, counting each assigned slot before the
    next call (:func:`assign_slots` does exactly that), keeps overflow in order: what was
    requested first still goes first.
    """
    zone_for_cap = _zone(cap_tz or tz)
    candidate = next_send_time(requested, 0, window, tz, country)
    for _ in range(_MAX_DAYS_SEARCHED):
        day = candidate.astimezone(zone_for_cap).date()
        if sent_per_day.get(day, 0) < cap_for(day):
            return candidate
        candidate = next_send_time(candidate, 1, window, tz, country)
    raise ValueError("no day with room under the sender's cap within three years")


def assign_slots(
    requested: Sequence[datetime],
    sent_per_day: Mapping[date, int],
    cap_for: Callable[[date], int],
    window: SendWindow,
    tz: str,
    country: str | None,
    *,
    cap_tz: str | None = None,
) -> list[datetime]:
    """Slots for several sends of one sender, in request order (ties keep their given order).

    Returns the slots in the order of ``requested``; ``sent_per_day`` is not modified.
    """
    counts = dict(sent_per_day)
    zone_for_cap = _zone(cap_tz or tz)
    slots: list[datetime | None] = [None] * len(requested)
    for index in sorted(range(len(requested)), key=lambda i: requested[i].astimezone(UTC)):
        slot = assign_slot(requested[index], counts, cap_for, window, tz, country, cap_tz=cap_tz)
        day = slot.astimezone(zone_for_cap).date()
        counts[day] = counts.get(day, 0) + 1
        slots[index] = slot
    return [s for s in slots if s is not None]
