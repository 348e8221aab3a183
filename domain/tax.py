"""Which tax a quote carries, and why, from a versioned table of rates.

The rates live in ``config/tax_jurisdictions.toml`` (owned by finance), not in code; this module
holds only the rules that choose among them. ``resolve_tax`` is pure and deterministic so the
deal-closure workflow can call it directly. Every result carries a note that is printed on the
order form, so a customer (and an auditor) can see why that rate was applied.

Assumption: the seller is established outside the customer's country (a US entity), so EU B2B
sales with a VAT id are reverse charged.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from os import PathLike
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from domain.models import AccountIn, TaxResult
from domain.money import format_pct, quantize
from domain.regions import is_eea, is_eu

_ZERO = Decimal(0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_rates(rates: dict[str, Decimal]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for code, rate in rates.items():
        if not (_ZERO <= rate <= 100):
            raise ValueError(f"rate for {code} must be between 0 and 100, got {rate}")
        out[code.strip().upper()] = rate
    return out


class UsTaxTable(_Frozen):
    """State-level sales-tax rates (percent) by state code; an absent state is not taxed."""

    states: dict[str, Decimal] = {}

    _upper = field_validator("states")(_check_rates)


class CanadaProvince(_Frozen):
    """How a province is taxed: GST only, HST (combined rate), or GST with self-assessed PST."""

    kind: Literal["gst", "hst", "gst_pst"]
    rate_pct: Decimal | None = None  # the HST rate, required for kind "hst"
    pst_pct: Decimal | None = None  # informational: PST is not collected by us

    @model_validator(mode="after")
    def _hst_needs_rate(self) -> CanadaProvince:
        if self.kind == "hst" and self.rate_pct is None:
            raise ValueError("an HST province needs rate_pct")
        return self


class CanadaTaxTable(_Frozen):
    gst_pct: Decimal
    provinces: dict[str, CanadaProvince] = {}

    @field_validator("provinces")
    @classmethod
    def _upper(cls, v: dict[str, CanadaProvince]) -> dict[str, CanadaProvince]:
        return {k.strip().upper(): p for k, p in v.items()}


class VatTable(_Frozen):
    """Standard VAT rates (percent) of EU/EEA countries, for customers without a VAT id."""

    standard: dict[str, Decimal] = {}

    _upper = field_validator("standard")(_check_rates)


class TaxTable(_Frozen):
    """The parsed tax table; ``version`` identifies the rates a quote was priced with."""

    version: str
    us: UsTaxTable = UsTaxTable()
    canada: CanadaTaxTable = CanadaTaxTable(gst_pct=Decimal(5))
    vat: VatTable = VatTable()


def load_tax_table(path: str | PathLike[str]) -> TaxTable:
    """Read and validate the TOML tax table at ``path`` (numbers parsed as exact Decimals)."""
    with open(path, "rb") as f:
        data = tomllib.load(f, parse_float=Decimal)
    return TaxTable.model_validate(data)


def _result(
    jurisdiction: str,
    rate: Decimal,
    taxable: Decimal,
    currency: str,
    note: str,
) -> TaxResult:
    return TaxResult(
        jurisdiction=jurisdiction,
        rate_pct=rate,
        amount=quantize(taxable * rate / 100, currency),
        note=note,
    )


def resolve_tax(
    account: AccountIn, taxable_amount: Decimal, currency: str, table: TaxTable
) -> TaxResult:
    """The tax on ``taxable_amount`` for this customer, with the jurisdiction and a written note.

    US: state rate from the table (absent state: 0 %). Canada: GST, HST or GST with the PST
    self-assessed by the customer. EU/EEA: reverse charge when the customer gives a VAT id,
    otherwise the country's standard VAT rate. Anything else: 0 %.
    """
    country = account.country.strip().upper()
    region = (account.region or "").strip().upper() or None

    if country == "US":
        return _resolve_us(region, taxable_amount, currency, table)
    if country == "CA":
        return _resolve_canada(region, taxable_amount, currency, table)
    if is_eea(country):
        return _resolve_vat(country, account.tax_id, taxable_amount, currency, table)
    return _result(
        "none",
        _ZERO,
        taxable_amount,
        currency,
        f"No tax rule for {country}: no tax charged.",
    )


def _resolve_us(region: str | None, taxable: Decimal, currency: str, table: TaxTable) -> TaxResult:
    if region is None:
        return _result(
            "US",
            _ZERO,
            taxable,
            currency,
            "No US state given: no sales tax charged. Add the state to charge the right tax.",
        )
    rate = table.us.states.get(region)
    if rate is None:
        return _result(
            f"US-{region}",
            _ZERO,
            taxable,
            currency,
            f"No sales-tax rule for US state {region} in tax table {table.version}: "
            "no sales tax charged.",
        )
    return _result(
        f"US-{region}",
        rate,
        taxable,
        currency,
        f"{region} state sales tax {format_pct(rate)} (state rate; local rates not included).",
    )


def _resolve_canada(
    region: str | None, taxable: Decimal, currency: str, table: TaxTable
) -> TaxResult:
    gst = table.canada.gst_pct
    province = table.canada.provinces.get(region) if region else None
    if province is None:
        # GST is federal and applies everywhere; without a known province we cannot know
        # whether HST replaces it, so charge GST and say so.
        where = f"province {region}" if region else "no province given"
        return _result(
            f"CA-{region}" if region else "CA",
            gst,
            taxable,
            currency,
            f"GST {format_pct(gst)} ({where}: not in tax table {table.version}, "
            "GST only; HST or PST may apply).",
        )
    if province.kind == "hst":
        rate = province.rate_pct if province.rate_pct is not None else gst
        return _result(
            f"CA-{region}", rate, taxable, currency, f"HST {format_pct(rate)} ({region})."
        )
    if province.kind == "gst_pst":
        return _result(
            f"CA-{region}",
            gst,
            taxable,
            currency,
            f"GST {format_pct(gst)} ({region}). Provincial sales tax is not collected on this "
            "invoice: the customer self-assesses PST.",
        )
    return _result(f"CA-{region}", gst, taxable, currency, f"GST {format_pct(gst)} ({region}).")


def _resolve_vat(
    country: str, tax_id: str | None, taxable: Decimal, currency: str, table: TaxTable
) -> TaxResult:
    jurisdiction = f"EU-{country}"
    vat_id = (tax_id or "").strip()
    if vat_id:
        if is_eu(country):
            note = (
                "Reverse charge: VAT to be accounted for by the recipient (Article 196, "
                f"Council Directive 2006/112/EC). Customer VAT ID: {vat_id}"
            )
        else:
            # Iceland, Liechtenstein and Norway are outside the EU VAT Directive: the reverse
            # charge comes from their national law, so the Directive is not cited.
            note = (
                "Reverse charge: VAT to be accounted for by the recipient under "
                f"{country} VAT law. Customer VAT ID: {vat_id}"
            )
        return TaxResult(
            jurisdiction=jurisdiction,
            rate_pct=_ZERO,
            amount=quantize(_ZERO, currency),
            reverse_charge=True,
            note=note,
        )
    rate = table.vat.standard.get(country)
    if rate is None:
        return _result(
            jurisdiction,
            _ZERO,
            taxable,
            currency,
            f"No VAT rate for {country} in tax table {table.version}: no VAT charged. "
            "Finance must add the rate before invoicing.",
        )
    return _result(
        jurisdiction,
        rate,
        taxable,
        currency,
        f"{country} VAT {format_pct(rate)} (standard rate; no customer VAT ID given).",
    )
