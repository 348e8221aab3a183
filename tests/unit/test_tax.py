"""resolve_tax and the seed tax table: US states, Canada GST/HST/PST, EU/EEA VAT, reverse charge."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.tax import TaxTable, VatTable, load_tax_table, resolve_tax
from tests.unit.factories import TAX_TABLE_PATH, D, account, tax_table

REVERSE_CHARGE_NOTE = (
    "Reverse charge: VAT to be accounted for by the recipient (Article 196, Council Directive "
    "2006/112/EC). Customer VAT ID: DE123456789"
)


def _tax(amount: str = "1000.00", currency: str = "USD", **acct):
    return resolve_tax(account(**acct), D(amount), currency, tax_table())


# --- the table ------------------------------------------------------------------------------


def test_seed_table_has_a_version_and_the_required_vat_rates():
    table = load_tax_table(TAX_TABLE_PATH)
    assert table.version
    required = {"DE": 19, "FR": 20, "NL": 21, "IE": 23, "ES": 21, "IT": 22, "SE": 25, "PL": 23}
    required |= {"BE": 21, "AT": 20}
    for country, rate in required.items():
        assert table.vat.standard[country] == rate, country


def test_table_rates_are_exact_decimals_not_floats():
    table = tax_table()
    assert isinstance(table.vat.standard["FI"], Decimal)
    assert table.vat.standard["FI"] == D("25.5")
    assert table.canada.provinces["QC"].pst_pct == D("9.975")


def test_table_refuses_a_rate_above_100(tmp_path):
    bad = tmp_path / "tax.toml"
    bad.write_text('version = "x"\n[vat.standard]\nDE = 190\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="between 0 and 100"):
        load_tax_table(bad)


def test_hst_province_without_rate_is_refused():
    with pytest.raises(ValidationError, match="rate_pct"):
        TaxTable.model_validate(
            {"version": "x", "canada": {"gst_pct": 5, "provinces": {"ON": {"kind": "hst"}}}}
        )


# --- United States --------------------------------------------------------------------------


def test_us_state_in_table_is_charged_its_rate():
    result = _tax("1000.00", country="US", region="NY")
    assert result.jurisdiction == "US-NY"
    assert result.rate_pct == 4
    assert result.amount == D("40.00")
    assert not result.reverse_charge
    assert "NY" in result.note


def test_us_fractional_state_rate_is_rounded_half_up():
    result = _tax("99.99", country="US", region="OH")  # 5.75 % of 99.99 = 5.749425
    assert result.amount == D("5.75")


def test_us_state_missing_from_table_is_zero_with_a_note_naming_it():
    result = _tax("1000.00", country="US", region="FL")
    assert result.jurisdiction == "US-FL"
    assert result.rate_pct == 0
    assert result.amount == D("0.00")
    assert "No sales-tax rule for US state FL" in result.note


def test_us_without_state_is_zero_and_says_the_state_is_missing():
    result = _tax(country="US", region=None)
    assert result.jurisdiction == "US"
    assert result.amount == 0
    assert "No US state given" in result.note


def test_region_code_is_case_insensitive():
    assert _tax(country="US", region="ny").jurisdiction == "US-NY"
    assert _tax(country="CA", region="on").rate_pct == 13


# --- Canada ---------------------------------------------------------------------------------


def test_canada_hst_province_charges_combined_hst():
    result = _tax("1000.00", "CAD", country="CA", region="ON")
    assert result.jurisdiction == "CA-ON"
    assert result.rate_pct == 13
    assert result.amount == D("130.00")
    assert "HST 13%" in result.note


@pytest.mark.parametrize(("province", "rate"), [("NB", 15), ("NL", 15), ("NS", 14), ("PE", 15)])
def test_canada_atlantic_hst_rates(province, rate):
    assert _tax(country="CA", region=province).rate_pct == rate


@pytest.mark.parametrize("province", ["AB", "NT", "NU", "YT"])
def test_canada_gst_only_province_charges_gst(province):
    result = _tax("1000.00", "CAD", country="CA", region=province)
    assert result.jurisdiction == f"CA-{province}"
    assert result.rate_pct == 5
    assert result.amount == D("50.00")
    assert "GST 5%" in result.note


@pytest.mark.parametrize("province", ["BC", "MB", "SK", "QC"])
def test_canada_pst_province_charges_gst_only_and_says_pst_is_self_assessed(province):
    result = _tax("1000.00", "CAD", country="CA", region=province)
    assert result.rate_pct == 5
    assert result.amount == D("50.00")
    assert "self-assesses PST" in result.note


def test_canada_unknown_province_charges_gst_and_says_so():
    result = _tax("1000.00", "CAD", country="CA", region="XX")
    assert result.jurisdiction == "CA-XX"
    assert result.rate_pct == 5
    assert "not in tax table" in result.note


# --- EU / EEA -------------------------------------------------------------------------------


def test_eu_customer_with_vat_id_is_reverse_charged():
    result = _tax("1000.00", "EUR", country="DE", region=None, tax_id="DE123456789")
    assert result.jurisdiction == "EU-DE"
    assert result.rate_pct == 0
    assert result.amount == D("0.00")
    assert result.reverse_charge is True
    assert result.note == REVERSE_CHARGE_NOTE


def test_eu_customer_without_vat_id_pays_standard_vat():
    result = _tax("1000.00", "EUR", country="DE", region=None, tax_id=None)
    assert result.jurisdiction == "EU-DE"
    assert result.rate_pct == 19
    assert result.amount == D("190.00")
    assert result.reverse_charge is False
    assert "no customer VAT ID" in result.note


def test_blank_vat_id_counts_as_no_vat_id():
    result = _tax("1000.00", "EUR", country="FR", region=None, tax_id="  ")
    assert not result.reverse_charge
    assert result.amount == D("200.00")


def test_eea_customer_outside_eu_is_reverse_charged_without_citing_the_eu_directive():
    result = _tax("1000.00", "EUR", country="NO", region=None, tax_id="NO123456789MVA")
    assert result.jurisdiction == "EU-NO"
    assert result.reverse_charge
    assert result.amount == 0
    assert "2006/112/EC" not in result.note
    assert "NO123456789MVA" in result.note


def test_eea_customer_without_vat_id_pays_its_national_vat():
    result = _tax("1000.00", "EUR", country="NO", region=None)
    assert result.jurisdiction == "EU-NO"
    assert result.amount == D("250.00")


def test_eu_country_missing_from_table_is_zero_with_a_clear_note():
    table = TaxTable(version="test", vat=VatTable(standard={"FR": D(20)}))
    result = resolve_tax(account(country="DE", region=None), D("1000.00"), "EUR", table)
    assert result.jurisdiction == "EU-DE"
    assert result.rate_pct == 0
    assert result.amount == 0
    assert "No VAT rate for DE" in result.note


def test_vat_on_jpy_rounds_to_whole_yen():
    result = _tax("1001", "JPY", country="DE", region=None)
    assert result.amount == D("190")  # 190.19


# --- elsewhere ------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["JP", "CH", "GB", "AU"])
def test_other_countries_have_no_tax_rule(country):
    result = _tax("1000.00", country=country, region=None)
    assert result.jurisdiction == "none"
    assert result.rate_pct == 0
    assert result.amount == 0
    assert result.note == f"No tax rule for {country}: no tax charged."
