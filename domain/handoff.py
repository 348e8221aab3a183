"""Pure rules of the handoff: package completeness, CSM matching, business-day placement,
renewal dates and the onboarding plan. No I/O; the activities feed them what the database holds.
"""

from __future__ import annotations

import calendar
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from domain.regions import is_eea
from domain.schedule import holidays_for, local_instant

# --- segment, region ------------------------------------------------------------------------

# Segment thresholds (employees, total in USD): the CS team's split, mirrored in org.toml's
# specialties ("enterprise", "mid-market", "smb").
ENTERPRISE_EMPLOYEES = 1000
ENTERPRISE_TOTAL_USD = Decimal("100000")
MID_MARKET_EMPLOYEES = 100
MID_MARKET_TOTAL_USD = Decimal("25000")

_AMER = frozenset("US CA MX BR AR CL CO PE UY PY BO EC VE CR PA GT HN SV NI DO JM TT PR".split())
_EMEA_EXTRA = frozenset(
    "GB CH UA TR IL AE SA QA KW BH OM JO EG MA TN ZA NG KE GH RS BA MK AL ME MD BY".split()
)


def segment_of(employees: int | None, total_usd: Decimal) -> str:
    """enterprise / mid-market / smb, from the larger of the two signals."""
    if (employees or 0) >= ENTERPRISE_EMPLOYEES or total_usd >= ENTERPRISE_TOTAL_USD:
        return "enterprise"
    if (employees or 0) >= MID_MARKET_EMPLOYEES or total_usd >= MID_MARKET_TOTAL_USD:
        return "mid-market"
    return "smb"


def region_of(country: str) -> str:
    code = (country or "").strip().upper()
    if code in _AMER:
        return "amer"
    if is_eea(code) or code in _EMEA_EXTRA:
        return "emea"
    return "apac"


def industry_key(industry: str | None) -> str | None:
    return industry.strip().lower().replace(" ", "-") if industry and industry.strip() else None


# Where we have no time zone from the customer: the country's (or US state's) main one.
_US_STATE_TZ = {
    **dict.fromkeys(
        "CT DE DC FL GA ME MD MA MI NH NJ NY NC OH PA RI SC VT VA WV".split(), "America/New_York"
    ),
    **dict.fromkeys(
        "AL AR IL IA KS KY LA MN MS MO NE ND OK SD TN TX WI".split(), "America/Chicago"
    ),
    **dict.fromkeys("AZ".split(), "America/Phoenix"),
    **dict.fromkeys("CO ID MT NM UT WY".split(), "America/Denver"),
    **dict.fromkeys("CA NV OR WA".split(), "America/Los_Angeles"),
    "AK": "America/Anchorage",
    "HI": "Pacific/Honolulu",
}
_COUNTRY_TZ = {
    "US": "America/New_York", "CA": "America/Toronto", "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo", "GB": "Europe/London", "IE": "Europe/Dublin",
    "DE": "Europe/Berlin", "FR": "Europe/Paris", "ES": "Europe/Madrid", "IT": "Europe/Rome",
    "NL": "Europe/Amsterdam", "BE": "Europe/Brussels", "AT": "Europe/Vienna",
    "CH": "Europe/Zurich", "SE": "Europe/Stockholm", "NO": "Europe/Oslo",
    "DK": "Europe/Copenhagen", "FI": "Europe/Helsinki", "PL": "Europe/Warsaw",
    "PT": "Europe/Lisbon", "JP": "Asia/Tokyo", "SG": "Asia/Singapore", "IN": "Asia/Kolkata",
    "AU": "Australia/Sydney", "NZ": "Pacific/Auckland", "ZA": "Africa/Johannesburg",
}  # fmt: skip


def customer_timezone(country: str, region: str | None, override: str | None = None) -> str:
    if override:
        return override
    code = (country or "").strip().upper()
    if code == "US" and region and region.upper() in _US_STATE_TZ:
        return _US_STATE_TZ[region.upper()]
    return _COUNTRY_TZ.get(code, "UTC")


def holiday_calendar(country: str, region: str | None) -> str:
    """The `holidays` code for the customer: "US-NY" when the state is known, else "US"."""
    code = (country or "").strip().upper()
    return f"{code}-{region.strip().upper()}" if region and code in ("US", "CA", "DE") else code


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItemSpec:
    key: str
    title: str
    owner: str  # "csm", "rep", "customer" (the primary contact), "support"
    due_business_days: int


@dataclass(frozen=True)
class OnboardingConfig:
    version: str
    required: tuple[str, ...]
    kickoff_within_business_days: int
    kickoff_local_time: time
    kickoff_minutes: int
    due_local_time: time
    reminder_before_business_days: int
    renewal_alert_days: tuple[int, ...]
    plans: Mapping[str, tuple[PlanItemSpec, ...]]

    @classmethod
    def load(cls, path: Path) -> OnboardingConfig:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> OnboardingConfig:
        kickoff = raw.get("kickoff", {})
        timing = raw.get("timing", {})
        plans = {
            segment: tuple(
                PlanItemSpec(
                    key=i["key"],
                    title=i["title"],
                    owner=i["owner"],
                    due_business_days=int(i["due_business_days"]),
                )
                for i in items
            )
            for segment, items in raw["plans"].items()
        }
        return cls(
            version=str(raw["version"]),
            required=tuple(raw["package"]["required"]),
            kickoff_within_business_days=int(kickoff.get("within_business_days", 3)),
            kickoff_local_time=time.fromisoformat(kickoff.get("local_time", "10:00")),
            kickoff_minutes=int(kickoff.get("minutes", 60)),
            due_local_time=time.fromisoformat(timing.get("due_local_time", "17:00")),
            reminder_before_business_days=int(timing.get("reminder_before_business_days", 1)),
            renewal_alert_days=tuple(
                int(d) for d in timing.get("renewal_alert_days", [90, 60, 30])
            ),
            plans=plans,
        )


@dataclass(frozen=True)
class CustomerSuccess:
    """The ``[customer_success]`` table of ``config/org.toml``: who leads, where wins are posted,
    which teams get their part of the package. Read per use: an edit applies at once."""

    lead: str | None = None
    wins_channel: str = "#wins"
    finance_team: str | None = None
    support_team: str | None = None

    @classmethod
    def load(cls, path: Path) -> CustomerSuccess:
        with path.open("rb") as fh:
            raw = tomllib.load(fh).get("customer_success", {})
        return cls(
            lead=raw.get("lead"),
            wins_channel=raw.get("wins_channel", "#wins"),
            finance_team=raw.get("finance_team"),
            support_team=raw.get("support_team"),
        )


# --- package completeness --------------------------------------------------------------------

REQUIRED_MESSAGES = {
    "primary_contact": 'Name the customer\'s primary contact (a contact with role "primary").',
    "primary_contact.email": "The primary contact needs an email address.",
    "success_goals": "Write down the customer's success goals (at least one).",
    "billing_contact": 'Name the customer\'s billing contact (a contact with role "billing").',
}


def missing_fields(
    required: Iterable[str], contacts: Sequence[Mapping[str, Any]], success_goals: Sequence[str]
) -> list[dict[str, str]]:
    """Each required field the package lacks, with what to supply (in configuration order)."""
    primary = next((c for c in contacts if c.get("role") == "primary"), None)
    have = {
        "primary_contact": primary is not None,
        "primary_contact.email": bool(primary and (primary.get("email") or "").strip()),
        "success_goals": any(g.strip() for g in success_goals),
        "billing_contact": any(c.get("role") == "billing" for c in contacts),
    }
    out = []
    for name in required:
        if name == "primary_contact.email" and primary is None:
            continue  # one message for a contact that is not there at all
        if not have.get(name, False):
            out.append({"field": name, "message": REQUIRED_MESSAGES.get(name, f"{name} is needed")})
    return out


# --- CSM matching -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CsmCandidate:
    email: str
    specialties: frozenset[str]
    capacity: int | None
    open_handoffs: int


@dataclass(frozen=True)
class CsmChoice:
    email: str
    reason: str
    fits: bool
    score: int = 0


@dataclass(frozen=True)
class CsmMatch:
    chosen: CsmChoice | None
    alternatives: list[CsmChoice] = field(default_factory=list)
    reason: str = ""


def match_csm(
    candidates: Iterable[CsmCandidate], *, segment: str, region: str, industry: str | None
) -> CsmMatch:
    """The CSM with the most matching specialties and free capacity; ties go to the one with
    the lowest load (open / capacity), then the fewest open handoffs, then the email, so the same
    inputs always give the same answer. A CSM without a capacity is not in the pool (the lead).
    """
    wanted = [w for w in (segment, region, industry) if w]
    ranked: list[tuple[tuple[bool, int, Decimal, int, str], CsmChoice]] = []
    for c in candidates:
        if c.capacity is None:
            continue
        matched = [w for w in wanted if w in c.specialties]
        load = f"{c.open_handoffs}/{c.capacity} open handoffs"
        if c.open_handoffs >= c.capacity:
            choice = CsmChoice(c.email, f"at capacity ({load})", fits=False, score=len(matched))
        elif not matched:
            choice = CsmChoice(
                c.email, f"no matching specialty for {', '.join(wanted)} ({load})", fits=False
            )
        else:
            choice = CsmChoice(
                c.email,
                f"specialty {', '.join(matched)} matches; {load}",
                fits=True,
                score=len(matched),
            )
        key = (
            not choice.fits,
            -choice.score,
            Decimal(c.open_handoffs) / Decimal(c.capacity or 1),
            c.open_handoffs,
            c.email,
        )
        ranked.append((key, choice))
    ranked.sort(key=lambda kc: kc[0])
    choices = [c for _, c in ranked]
    if choices and choices[0].fits:
        return CsmMatch(chosen=choices[0], alternatives=choices[1:4], reason=choices[0].reason)
    why = (
        f"no CSM with a matching specialty ({', '.join(wanted)}) and free capacity"
        if choices
        else "no CSM with a capacity is configured"
    )
    return CsmMatch(chosen=None, alternatives=choices[:3], reason=why)


# --- business days ----------------------------------------------------------------------------


def is_business_day(d: date, holiday_country: str | None) -> bool:
    if d.weekday() >= 5:
        return False
    return not (holiday_country and d in holidays_for(holiday_country, d.year))


def add_business_days(start: date, n: int, holiday_country: str | None) -> date:
    """The ``n``-th business day after ``start`` (``start`` itself never counts)."""
    d, left = start, n
    for _ in range(3 * 366):
        d += timedelta(days=1)
        if is_business_day(d, holiday_country):
            left -= 1
            if left <= 0:
                return d
    raise ValueError("no business day within three years")


def kickoff_slot(
    close_date: date, *, tz: str, holiday_country: str | None, local: time, minutes: int
) -> tuple[datetime, datetime]:
    """The kickoff: the first business day after close, at ``local`` in the customer's zone."""
    day = add_business_days(close_date, 1, holiday_country)
    start = local_instant(day, local, tz)
    return start, start + timedelta(minutes=minutes)


def due_at(
    close_date: date, business_days: int, *, tz: str, holiday_country: str | None, local: time
) -> datetime:
    """End of the ``business_days``-th business day after close, in the customer's zone."""
    return local_instant(add_business_days(close_date, business_days, holiday_country), local, tz)


# --- term and renewal -------------------------------------------------------------------------


def add_months(d: date, months: int) -> date:
    """Same day ``months`` later, clamped to the month's end (Jan 31 + 1 month = Feb 28/29)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def term_end(start: date, months: int) -> date:
    """The last day of a term of ``months`` starting on ``start`` (the day before the
    anniversary: a 12-month term from 2027-01-01 ends 2027-12-31)."""
    return add_months(start, months) - timedelta(days=1)


def renewal_alert_times(end: date, days_before: Iterable[int]) -> list[tuple[int, datetime]]:
    """(days_before, due) for each alert, at 09:00 UTC on that day, earliest first."""
    return sorted(
        (
            (n, datetime.combine(end - timedelta(days=n), time(9, 0), tzinfo=UTC))
            for n in days_before
        ),
        key=lambda nd: nd[1],
    )
