"""Country groupings and title rules that contracts, tax and approvals depend on.

Kept as plain frozensets and regular expressions (no lookups, no I/O) so they are deterministic
inside workflow code. Countries are ISO 3166-1 alpha-2 codes, upper case.
"""

from __future__ import annotations

import re

EU_MEMBER_STATES: frozenset[str] = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    }
)  # fmt: skip
"""The 27 EU member states (ISO codes; Greece is "GR" here even though its VAT prefix is "EL")."""

EEA_COUNTRIES: frozenset[str] = EU_MEMBER_STATES | frozenset({"IS", "LI", "NO"})
"""The European Economic Area: the EU plus Iceland, Liechtenstein and Norway (GDPR applies)."""

_VAT_PREFIX_EXCEPTIONS: dict[str, str] = {"GR": "EL"}


def _norm(country: str | None) -> str:
    return (country or "").strip().upper()


def is_eu(country: str | None) -> bool:
    """True when ``country`` is an EU member state (EU VAT rules apply)."""
    return _norm(country) in EU_MEMBER_STATES


def is_eea(country: str | None) -> bool:
    """True when ``country`` is in the EEA (GDPR applies, so a DPA is needed)."""
    return _norm(country) in EEA_COUNTRIES


def vat_prefix(country: str) -> str:
    """The prefix a VAT id of ``country`` starts with: the ISO code, except Greece ("EL")."""
    c = _norm(country)
    return _VAT_PREFIX_EXCEPTIONS.get(c, c)


_C_LEVEL_ACRONYM = re.compile(r"\b(?:CEO|CFO|CTO|COO|CIO|CISO|CRO|CMO)\b", re.IGNORECASE)
# "Chief <one to four words> Officer": "Chief Revenue Officer", "Chief Information Security
# Officer". "Chief of Staff" has no "Officer" and so does not match.
_CHIEF_OFFICER = re.compile(r"\bchief\s+(?:[\w&/-]+[\s,]+){1,4}?officer\b", re.IGNORECASE)


def is_c_level(title: str | None) -> bool:
    """True when a job title is C-level (CEO, CFO, ..., or "Chief ... Officer").

    Matches whole words only, case-insensitively: "Director" or "Chief of Staff" are not C-level.
    """
    if not title:
        return False
    return bool(_C_LEVEL_ACRONYM.search(title) or _CHIEF_OFFICER.search(title))
