"""The approval policy file and plan_approvals: who approves, in which stage, and why."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from domain.approval_policy import (
    ApprovalPolicy,
    known_currencies,
    load_policy,
    plan_approvals,
    to_reference,
)
from domain.pricing import price_quote
from tests.unit.factories import (
    POLICY_PATH,
    D,
    account,
    deal_with_total,
    make_deal,
    policy,
    tax_table,
    term,
)


def _plan(deal):
    return plan_approvals(deal, price_quote(deal, tax_table()), policy())


def _roles(plan):
    return [[a.role for a in stage.approvals] for stage in plan.stages]


def _approval(plan, role):
    return next(a for s in plan.stages for a in s.approvals if a.role == role)


# --- loading --------------------------------------------------------------------------------


def test_policy_records_version_and_sha256_of_file_bytes():
    loaded = load_policy(POLICY_PATH)
    assert loaded.version == "2026.11.2"
    assert loaded.sha256 == hashlib.sha256(POLICY_PATH.read_bytes()).hexdigest()
    assert loaded.reference_currency == "USD"


def test_sha256_changes_when_file_bytes_change_even_if_meaning_does_not(tmp_path):
    copy = tmp_path / "policy.toml"
    copy.write_bytes(POLICY_PATH.read_bytes())
    same = load_policy(copy)
    copy.write_bytes(POLICY_PATH.read_bytes() + b"\n# reviewed\n")
    changed = load_policy(copy)
    assert same.sha256 == load_policy(POLICY_PATH).sha256
    assert changed.sha256 != same.sha256
    assert changed.version == same.version


def test_thresholds_come_from_the_file_not_the_code(tmp_path):
    copy = tmp_path / "policy.toml"
    text = POLICY_PATH.read_text(encoding="utf-8")
    assert 'type = "total_at_least", amount = 25000 }' in text
    copy.write_text(text.replace("amount = 25000 }", "amount = 20000 }"), encoding="utf-8")
    deal = deal_with_total("22000.00")
    quote = price_quote(deal, tax_table())
    assert plan_approvals(deal, quote, policy()).is_empty
    plan = plan_approvals(deal, quote, load_policy(copy))
    assert _roles(plan) == [["finance_director"]]
    assert "20,000.00 USD Finance Director threshold" in plan.stages[0].approvals[0].reasons[0]


def _policy_data(**changes):
    data = policy().model_dump()
    data.update(changes)
    return data


def test_policy_refuses_a_rule_for_an_unknown_role():
    rules = [
        *policy().model_dump()["rules"],
        {"id": "x", "role": "cto", "when": {"type": "country_in_eea"}},
    ]
    with pytest.raises(ValidationError, match="unknown role cto"):
        ApprovalPolicy.model_validate(_policy_data(rules=rules))


def test_policy_refuses_an_unknown_condition_type():
    rules = [{"id": "x", "role": "legal", "when": {"type": "moon_phase"}}]
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate(_policy_data(rules=rules))


def test_policy_refuses_duplicate_rule_ids():
    rules = policy().model_dump()["rules"]
    with pytest.raises(ValidationError, match="unique"):
        ApprovalPolicy.model_validate(_policy_data(rules=[*rules, rules[0]]))


# --- FX -------------------------------------------------------------------------------------


def test_known_currencies_are_the_fx_table():
    assert {"USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY", "KRW"} <= known_currencies(policy())


def test_to_reference_converts_with_static_rate_and_rounds_to_cents():
    assert to_reference(D("25000.00"), "USD", policy()) == D("25000.00")
    assert to_reference(D("25000.00"), "EUR", policy()) == D("27000.00")
    assert to_reference(D("1000000"), "JPY", policy()) == D("6700.00")


def test_to_reference_refuses_unknown_currency_with_clear_message():
    with pytest.raises(ValueError, match="Unknown currency 'XYZ'.*2026.11.2"):
        to_reference(D(1), "XYZ", policy())


def test_plan_for_unknown_currency_raises_value_error():
    deal = make_deal(currency="XYZ")
    with pytest.raises(ValueError, match="XYZ"):
        plan_approvals(deal, price_quote(deal, tax_table()), policy())


# --- rules and boundaries -----------------------------------------------------------------


def test_small_plain_deal_needs_no_approval():
    plan = _plan(deal_with_total("24999.99"))
    assert plan.stages == ()
    assert plan.is_empty
    assert plan.policy_version == "2026.11.2"
    assert plan.policy_sha256 == policy().sha256


def test_total_exactly_25000_needs_finance_director_with_written_reason():
    plan = _plan(deal_with_total("25000.00"))
    assert _roles(plan) == [["finance_director"]]
    approval = plan.stages[0].approvals[0]
    assert approval.reasons == (
        "Total 25,000.00 USD is at or above the 25,000.00 USD Finance Director threshold.",
    )
    assert approval.rule_ids == ("finance_director.total",)


def test_reason_quotes_the_deal_total_like_the_example():
    reason = _approval(_plan(deal_with_total("47500.00")), "finance_director").reasons[0]
    assert (
        reason == "Total 47,500.00 USD is at or above the 25,000.00 USD Finance Director threshold."
    )


def test_total_includes_tax_when_compared_with_threshold():
    deal = deal_with_total("22000.00", account=account(region="NY"))  # + 4 % = 22,880
    assert _plan(deal).is_empty
    deal = deal_with_total("24500.00", account=account(region="NY"))  # + 4 % = 25,480
    assert _roles(_plan(deal)) == [["finance_director"]]


def test_total_in_eur_is_compared_in_usd_and_reason_shows_both():
    plan = _plan(
        deal_with_total("25000.00", currency="EUR", account=account(country="CH", region=None))
    )
    reason = _approval(plan, "finance_director").reasons[0]
    assert reason == (
        "Total 25,000.00 EUR (27,000.00 USD at the policy rate of 1.08) is at or above the "
        "25,000.00 USD Finance Director threshold."
    )


def test_eur_total_just_under_threshold_after_conversion_needs_no_finance():
    # 23,148.14 EUR x 1.08 = 24,999.99 USD
    plan = _plan(
        deal_with_total("23148.14", currency="EUR", account=account(country="CH", region=None))
    )
    assert plan.is_empty


def test_jpy_total_is_converted_and_rounded_to_cents_before_comparison():
    # 3,731,342 JPY x 0.0067 = 24,999.9914 -> 24,999.99 USD: under the threshold.
    assert _plan(deal_with_total("3731342", currency="JPY")).is_empty
    # 3,731,343 JPY x 0.0067 = 24,999.9981 -> 25,000.00 USD: the figure shown is the one compared.
    plan = _plan(deal_with_total("3731343", currency="JPY"))
    assert (
        _approval(plan, "finance_director")
        .reasons[0]
        .startswith("Total 3,731,343 JPY (25,000.00 USD at the policy rate of 0.0067)")
    )


def test_discount_exactly_10_needs_no_sales_vp():
    assert _plan(make_deal(discount_pct=D(10))).is_empty


def test_discount_10_01_needs_sales_vp_with_reason():
    plan = _plan(make_deal(discount_pct=D("10.01")))
    assert _roles(plan) == [["sales_vp"]]
    assert _approval(plan, "sales_vp").reasons == (
        "Discount 10.01% is above the 10% Sales VP threshold.",
    )


def test_discount_exactly_25_needs_sales_vp_but_not_cfo():
    assert _roles(_plan(make_deal(discount_pct=D(25)))) == [["sales_vp"]]


def test_discount_above_25_adds_cfo_in_second_stage():
    plan = _plan(make_deal(discount_pct=D("25.5")))
    assert _roles(plan) == [["sales_vp"], ["cfo"]]
    assert [(s.index, s.mode) for s in plan.stages] == [(0, "all"), (1, "all")]
    cfo = _approval(plan, "cfo")
    assert cfo.reasons == ("Discount 25.5% is above the 25% CFO threshold.",)
    assert cfo.rule_ids == ("cfo.discount",)


def test_payment_terms_exactly_30_days_need_no_legal():
    assert _plan(make_deal(payment_terms_days=30)).is_empty


def test_payment_terms_over_30_days_need_legal():
    plan = _plan(make_deal(payment_terms_days=45))
    assert _roles(plan) == [["legal"]]
    assert _approval(plan, "legal").reasons == (
        "Payment terms of 45 days are above the 30-day Legal threshold.",
    )


def test_legal_custom_term_needs_legal_and_quotes_the_term():
    plan = _plan(make_deal(custom_terms=(term("legal", "Liability cap raised to 3x fees"),)))
    assert _roles(plan) == [["legal"]]
    assert '"Liability cap raised to 3x fees"' in _approval(plan, "legal").reasons[0]


def test_eea_customer_needs_legal_for_gdpr():
    plan = _plan(make_deal(account=account(country="NO", region=None)))
    assert _roles(plan) == [["legal"]]
    assert "GDPR" in _approval(plan, "legal").reasons[0]
    assert _approval(plan, "legal").rule_ids == ("legal.eea_customer",)


def test_non_eea_customer_needs_no_legal():
    assert _plan(make_deal(account=account(country="CH", region=None))).is_empty


def test_security_custom_term_needs_infosec_only():
    plan = _plan(make_deal(custom_terms=(term("security", "Annual pen test report"),)))
    assert _roles(plan) == [["infosec"]]


def test_other_and_payment_custom_terms_need_no_approval():
    plan = _plan(make_deal(custom_terms=(term("other"), term("payment"))))
    assert plan.is_empty


def test_every_legal_rule_that_fires_is_merged_into_one_legal_approval():
    deal = make_deal(
        payment_terms_days=60,
        account=account(country="DE", region=None, tax_id="DE123456789"),
        custom_terms=(term("legal", "Governing law: Germany"), term("legal", "Audit rights")),
    )
    plan = _plan(deal)
    legal = [a for s in plan.stages for a in s.approvals if a.role == "legal"]
    assert len(legal) == 1
    assert legal[0].rule_ids == ("legal.custom_terms", "legal.payment_terms", "legal.eea_customer")
    assert len(legal[0].reasons) == 3
    assert "2 custom legal terms" in legal[0].reasons[0]


def test_total_250000_needs_finance_then_cfo():
    plan = _plan(deal_with_total("250000.00"))
    assert _roles(plan) == [["finance_director"], ["cfo"]]
    assert _approval(plan, "cfo").rule_ids == ("cfo.total",)


def test_cfo_with_both_discount_and_total_gets_both_reasons():
    plan = _plan(deal_with_total("400000.00", discount_pct=D(30)))  # 280,000 after discount
    cfo = _approval(plan, "cfo")
    assert cfo.rule_ids == ("cfo.discount", "cfo.total")
    assert len(cfo.reasons) == 2


def test_total_499999_99_needs_no_ceo():
    assert _roles(_plan(deal_with_total("499999.99"))) == [["finance_director"], ["cfo"]]


def test_total_exactly_500000_needs_ceo_with_cfo_in_second_stage():
    plan = _plan(deal_with_total("500000.00"))
    assert _roles(plan) == [["finance_director"], ["cfo", "ceo"]]
    assert _approval(plan, "ceo").reasons == (
        "Total 500,000.00 USD is at or above the 500,000.00 USD CEO threshold.",
    )


def test_everything_at_once_orders_roles_as_the_policy_declares_them():
    deal = deal_with_total(
        "800000.00",
        discount_pct=D(30),
        payment_terms_days=90,
        account=account(country="FR", region=None, tax_id="FR12345678901"),
        custom_terms=(term("security", "SOC 2 Type II"), term("legal", "Uncapped IP indemnity")),
    )
    plan = _plan(deal)
    assert _roles(plan) == [["finance_director", "sales_vp", "legal", "infosec"], ["cfo", "ceo"]]
    assert [s.index for s in plan.stages] == [0, 1]


def test_stage_indexes_are_renumbered_when_an_earlier_stage_is_empty():
    # A policy where the CFO rule alone fires: the only stage becomes index 0.
    only_cfo = policy().model_copy(
        update={"rules": tuple(r for r in policy().rules if r.id == "cfo.discount")}
    )
    deal = make_deal(discount_pct=D(40))
    plan = plan_approvals(deal, price_quote(deal, tax_table()), only_cfo)
    assert [(s.index, [a.role for a in s.approvals]) for s in plan.stages] == [(0, ["cfo"])]


def test_approval_inputs_change_only_for_roles_that_review_what_changed():
    from decimal import Decimal

    from domain.approval_inputs import inputs_sha256
    from domain.approval_policy import load_policy
    from domain.pricing import price_quote
    from domain.tax import load_tax_table
    from tests.unit.factories import CONFIG_DIR, make_deal

    policy = load_policy(CONFIG_DIR / "approval_policy.toml")
    table = load_tax_table(CONFIG_DIR / "tax_jurisdictions.toml")
    before = make_deal(discount_pct=Decimal("30"))
    after = before.model_copy(update={"discount_pct": Decimal("20")})
    q_before, q_after = price_quote(before, table), price_quote(after, table)

    def changed(role: str) -> bool:
        reviews = policy.roles[role].reviews
        return inputs_sha256(reviews, before, q_before) != inputs_sha256(reviews, after, q_after)

    assert changed("sales_vp") and changed("cfo")
    assert not changed("legal") and not changed("infosec")
