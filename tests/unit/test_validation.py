"""validate_deal: the business checks a deal must pass before a closure can price it."""

from __future__ import annotations

import pytest

from domain.approval_policy import known_currencies
from domain.validation import validate_deal
from tests.unit.factories import D, account, line, make_deal, policy, signer


def _fields(deal, **kwargs):
    return [p.field for p in validate_deal(deal, **kwargs)]


def _only(deal, **kwargs):
    problems = validate_deal(deal, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_deal_has_no_problems():
    assert validate_deal(make_deal()) == []


def test_boundaries_that_are_allowed():
    deal = make_deal(
        term_months=120,
        discount_pct=D(100),
        payment_terms_days=180,
        line_items=(line(quantity="0.5", unit_price=0),),
    )
    assert validate_deal(deal) == []
    assert validate_deal(make_deal(term_months=1, discount_pct=D(0), payment_terms_days=0)) == []


# --- line items ------------------------------------------------------------------------------


def test_deal_without_line_items_is_refused():
    problem = _only(make_deal(line_items=()))
    assert problem.field == "line_items"
    assert problem.message.startswith("Add at least one line item")


@pytest.mark.parametrize("quantity", [0, -1])
def test_quantity_must_be_positive(quantity):
    problem = _only(make_deal(line_items=(line("SEAT", quantity=quantity),)))
    assert problem.field == "line_items[0].quantity"
    assert "SEAT" in problem.message


def test_negative_unit_price_is_refused_and_points_at_the_right_line():
    deal = make_deal(line_items=(line("A"), line("B", unit_price="-5")))
    problem = _only(deal)
    assert problem.field == "line_items[1].unit_price"
    assert "discount" in problem.message


# --- commercial terms -----------------------------------------------------------------------


@pytest.mark.parametrize("months", [0, 121, -12])
def test_term_must_be_1_to_120_months(months):
    assert _fields(make_deal(term_months=months)) == ["term_months"]


@pytest.mark.parametrize("pct", ["-0.01", "100.01"])
def test_discount_must_be_0_to_100(pct):
    assert _fields(make_deal(discount_pct=D(pct))) == ["discount_pct"]


@pytest.mark.parametrize("days", [-1, 181])
def test_payment_terms_must_be_0_to_180_days(days):
    assert _fields(make_deal(payment_terms_days=days)) == ["payment_terms_days"]


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLAR", "U5D", ""])
def test_currency_must_be_three_capital_letters(currency):
    problem = _only(make_deal(currency=currency))
    assert problem.field == "currency"
    assert "three capital letters" in problem.message


def test_currency_unknown_to_the_policy_is_refused_when_known_currencies_given():
    known = known_currencies(policy())
    assert validate_deal(make_deal(currency="XYZ")) == []  # well-formed on its own
    problem = _only(make_deal(currency="XYZ"), known_currencies=known)
    assert problem.field == "currency"
    assert "no exchange rate" in problem.message
    assert validate_deal(make_deal(currency="JPY"), known_currencies=known) == []


# --- signers ----------------------------------------------------------------------------------


def test_deal_without_signers_is_refused_with_a_message_for_the_rep():
    problem = _only(make_deal(signers=()))
    assert problem.field == "signers"
    assert problem.message == "Add at least one signer: the contract cannot be sent without one."


def test_routing_order_must_be_at_least_1():
    problem = _only(make_deal(signers=(signer(routing_order=0),)))
    assert problem.field == "signers[0].routing_order"


def test_signer_emails_must_be_unique_ignoring_case():
    deal = make_deal(
        signers=(
            signer("Pat", "pat@acme.example", routing_order=1),
            signer("Pat again", "PAT@acme.example ", routing_order=2),
        )
    )
    problem = _only(deal)
    assert problem.field == "signers[1].email"
    assert "twice" in problem.message


# --- account -----------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["USA", "u", "us", "1A"])
def test_country_must_be_two_capital_letters(country):
    problem = _only(make_deal(account=account(country=country, region=None)))
    assert problem.field == "account.country"


@pytest.mark.parametrize(("country", "what"), [("US", "state"), ("CA", "province")])
def test_us_and_canadian_accounts_need_a_region_for_tax(country, what):
    for region in (None, "  "):
        problem = _only(make_deal(account=account(country=country, region=region)))
        assert problem.field == "account.region"
        assert what in problem.message
        assert "sales tax depends on it" in problem.message


def test_other_countries_do_not_need_a_region():
    assert validate_deal(make_deal(account=account(country="JP", region=None))) == []


def test_eu_vat_id_must_start_with_the_country_prefix():
    deal = make_deal(account=account(country="DE", region=None, tax_id="FR12345678901"))
    problem = _only(deal)
    assert problem.field == "account.tax_id"
    assert "does not start with DE" in problem.message


def test_eu_vat_id_with_matching_prefix_is_fine_in_any_case():
    deal = make_deal(account=account(country="DE", region=None, tax_id="de123456789"))
    assert validate_deal(deal) == []


def test_greek_vat_id_uses_el_prefix():
    assert (
        validate_deal(make_deal(account=account(country="GR", region=None, tax_id="EL123456789")))
        == []
    )
    problem = _only(make_deal(account=account(country="GR", region=None, tax_id="GR123456789")))
    assert "does not start with EL" in problem.message


def test_eea_outside_eu_vat_id_prefix_is_checked_too():
    assert _fields(make_deal(account=account(country="NO", region=None, tax_id="SE123"))) == [
        "account.tax_id"
    ]


def test_tax_id_outside_eea_is_not_checked():
    assert validate_deal(make_deal(account=account(country="GB", region=None, tax_id="123"))) == []


def test_all_problems_are_reported_at_once():
    deal = make_deal(
        line_items=(),
        term_months=0,
        discount_pct=D(150),
        payment_terms_days=365,
        currency="eur",
        signers=(),
        account=account(country="US", region=None),
    )
    assert _fields(deal) == [
        "line_items",
        "term_months",
        "discount_pct",
        "payment_terms_days",
        "currency",
        "signers",
        "account.region",
    ]
