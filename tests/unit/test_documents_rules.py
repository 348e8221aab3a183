"""select_documents (which contract documents, why) and the region/title rules behind it."""

from __future__ import annotations

import pytest

from domain.documents import select_documents
from domain.pricing import price_quote
from domain.regions import EEA_COUNTRIES, EU_MEMBER_STATES, is_c_level, is_eea, is_eu, vat_prefix
from tests.unit.factories import (
    D,
    account,
    deal_with_total,
    make_deal,
    policy,
    signer,
    tax_table,
    term,
)


def _docs(deal, pol=None):
    return select_documents(deal, price_quote(deal, tax_table()), pol or policy())


def _kinds(deal, pol=None):
    return [d.kind for d in _docs(deal, pol)]


# --- regions and titles ---------------------------------------------------------------------


def test_eu_has_27_members_and_eea_adds_iceland_liechtenstein_norway():
    assert len(EU_MEMBER_STATES) == 27
    assert EEA_COUNTRIES - EU_MEMBER_STATES == {"IS", "LI", "NO"}


@pytest.mark.parametrize("country", ["DE", "FR", "GR", "IE", "HR", "de"])
def test_eu_members_are_eu_and_eea(country):
    assert is_eu(country)
    assert is_eea(country)


@pytest.mark.parametrize("country", ["NO", "IS", "LI"])
def test_eea_outside_eu(country):
    assert is_eea(country)
    assert not is_eu(country)


@pytest.mark.parametrize("country", ["CH", "GB", "US", "EL", "", None])
def test_not_in_eea(country):
    assert not is_eea(country)


def test_greek_vat_prefix_is_el():
    assert vat_prefix("GR") == "EL"
    assert vat_prefix("DE") == "DE"


@pytest.mark.parametrize(
    "title",
    [
        "CEO",
        "cfo",
        "CTO & Co-founder",
        "Co-founder / COO",
        "CIO",
        "CISO",
        "CRO",
        "CMO",
        "Chief Executive Officer",
        "chief revenue officer",
        "Chief Information Security Officer",
        "Deputy CFO",
    ],
)
def test_c_level_titles(title):
    assert is_c_level(title)


@pytest.mark.parametrize(
    "title",
    [
        None,
        "",
        "Director",
        "Director of Finance",
        "Chief of Staff",
        "VP Finance",
        "Procurement Officer",
        "Cisco admin",
        "Chiefly responsible for officers",
    ],
)
def test_titles_that_are_not_c_level(title):
    assert not is_c_level(title)


# --- select_documents -----------------------------------------------------------------------


def test_small_us_deal_gets_only_the_order_form():
    docs = _docs(make_deal())
    assert [(d.kind, d.template, d.reason) for d in docs] == [
        ("order_form", "contracts/order_form.html.j2", "Every deal gets an order form."),
    ]


def test_total_exactly_100000_adds_msa():
    docs = _docs(deal_with_total("100000.00"))
    assert [d.kind for d in docs] == ["order_form", "msa"]
    assert "100,000.00 USD" in docs[1].reason
    assert docs[1].template == "contracts/msa.html.j2"


def test_total_just_under_100000_has_no_msa():
    assert _kinds(deal_with_total("99999.99")) == ["order_form"]


def test_msa_compares_total_in_reference_currency():
    # 95,000 EUR x 1.08 = 102,600 USD
    deal = deal_with_total("95000.00", currency="EUR", account=account(country="CH", region=None))
    docs = _docs(deal)
    assert [d.kind for d in docs] == ["order_form", "msa"]
    assert "95,000.00 EUR (102,600.00 USD)" in docs[1].reason


def test_employees_exactly_500_adds_msa_and_says_why():
    docs = _docs(make_deal(account=account(employees=500)))
    assert [d.kind for d in docs] == ["order_form", "msa"]
    assert "Acme Corp has 500 employees" in docs[1].reason


@pytest.mark.parametrize("employees", [499, None])
def test_fewer_than_500_or_unknown_employees_has_no_msa(employees):
    assert _kinds(make_deal(account=account(employees=employees))) == ["order_form"]


def test_msa_reason_names_both_triggers_when_both_fire():
    reason = _docs(deal_with_total("150000.00", account=account(employees=2000)))[1].reason
    assert "150,000.00 USD" in reason
    assert "2,000 employees" in reason


def test_msa_thresholds_come_from_the_policy():
    pol = policy()
    strict = pol.model_copy(
        update={"documents": pol.documents.model_copy(update={"msa_employees_at_least": 100})}
    )
    deal = make_deal(account=account(employees=120))
    assert _kinds(deal) == ["order_form"]
    assert _kinds(deal, strict) == ["order_form", "msa"]
    assert D(100000) == pol.documents.msa_total_at_least


@pytest.mark.parametrize("country", ["DE", "NO", "GR"])
def test_eea_customer_gets_a_dpa_citing_gdpr_article_28(country):
    docs = _docs(make_deal(account=account(country=country, region=None)))
    dpa = [d for d in docs if d.kind == "dpa"]
    assert len(dpa) == 1
    assert "GDPR Art. 28" in dpa[0].reason
    assert dpa[0].template == "contracts/dpa.html.j2"


@pytest.mark.parametrize("country", ["US", "CH", "GB"])
def test_non_eea_customer_gets_no_dpa(country):
    region = "FL" if country == "US" else None
    assert "dpa" not in _kinds(make_deal(account=account(country=country, region=region)))


def test_security_custom_term_adds_security_exhibit():
    docs = _docs(make_deal(custom_terms=(term("security", "Pen test yearly"),)))
    assert [d.kind for d in docs] == ["order_form", "security_exhibit"]
    assert "1 custom security term" in docs[1].reason


def test_non_security_custom_terms_add_no_exhibit():
    assert _kinds(make_deal(custom_terms=(term("legal"), term("other")))) == ["order_form"]


def test_c_level_signer_adds_executive_summary_naming_the_signer():
    deal = make_deal(
        signers=(
            signer("Ann Buyer", "ann@acme.example", "Procurement Director", 1),
            signer("Jo Chief", "jo@acme.example", "Chief Financial Officer", 2),
        )
    )
    docs = _docs(deal)
    assert [d.kind for d in docs] == ["order_form", "executive_summary"]
    assert "Jo Chief (Chief Financial Officer)" in docs[1].reason
    assert "Ann Buyer" not in docs[1].reason


def test_director_or_chief_of_staff_signer_gets_no_executive_summary():
    deal = make_deal(
        signers=(
            signer("Ann", "ann@acme.example", "Director", 1),
            signer("Bo", "bo@acme.example", "Chief of Staff", 2),
        )
    )
    assert _kinds(deal) == ["order_form"]


def test_all_documents_come_in_fixed_order_with_reasons():
    deal = deal_with_total(
        "200000.00",
        account=account(country="DE", region=None, tax_id="DE123456789", employees=900),
        custom_terms=(term("security", "ISO 27001"), term("legal", "Audit")),
        signers=(signer(title="CEO"),),
    )
    docs = _docs(deal)
    assert [d.kind for d in docs] == [
        "order_form",
        "msa",
        "dpa",
        "security_exhibit",
        "executive_summary",
    ]
    assert all(d.template == f"contracts/{d.kind}.html.j2" for d in docs)
    assert all(d.reason.endswith(".") for d in docs)
