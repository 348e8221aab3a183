"""Contract templates and the renderer: content, escaping, strictness and PDF determinism."""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dealflow.rendering import (
    DEFAULT_SELLER,
    DocumentRenderer,
    RenderError,
    contract_context,
    format_money,
    format_pct,
)
from domain.models import (
    AccountIn,
    CustomTermIn,
    DealTerms,
    DocumentChoice,
    Installment,
    LineItemIn,
    PricedLine,
    Quote,
    RevenueMonth,
    SignerIn,
    TaxResult,
)

GENERATED_AT = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
SELLER = {"name": "dealflow Inc."}

TEMPLATES = {
    "order_form": "contracts/order_form.html.j2",
    "msa": "contracts/msa.html.j2",
    "dpa": "contracts/dpa.html.j2",
    "security_exhibit": "contracts/security_exhibit.html.j2",
    "executive_summary": "contracts/executive_summary.html.j2",
}

CHOICES = tuple(
    DocumentChoice(kind=kind, template=template, reason=f"{kind} rule fired")  # type: ignore[arg-type]
    for kind, template in TEMPLATES.items()
)


def make_deal(
    *,
    customer_name: str = "Müller Logistik GmbH",
    country: str = "DE",
    tax_id: str | None = "DE811907980",
    signers: tuple[SignerIn, ...] | None = None,
) -> DealTerms:
    return DealTerms(
        deal_id="DL-2025-0042",
        name="Müller Logistik – Platform rollout",
        owner_email="ava.rep@dealflow.example",
        currency="EUR",
        term_months=24,
        billing_frequency="annual",
        payment_terms_days=45,
        discount_pct=Decimal("10"),
        line_items=(
            LineItemIn(
                sku="DF-PLAT-ENT",
                description="dealflow Platform, Enterprise edition (per seat, per year)",
                quantity=Decimal("150"),
                unit_price=Decimal("240.00"),
            ),
            LineItemIn(
                sku="DF-ONB-PRO",
                description="Professional onboarding (one-off)",
                quantity=Decimal("1"),
                unit_price=Decimal("8000.00"),
            ),
        ),
        account=AccountIn(
            name=customer_name,
            domain="mueller-logistik.de",
            country=country,
            region=None,
            employees=1200,
            industry="Logistics",
            tax_id=tax_id,
        ),
        signers=signers
        or (
            SignerIn(
                name="Dr. Katrin Weber",
                email="k.weber@mueller-logistik.de",
                title="Chief Financial Officer",
                routing_order=2,
            ),
            SignerIn(
                name="Jonas Richter",
                email="j.richter@mueller-logistik.de",
                title="Head of Procurement",
                routing_order=1,
            ),
        ),
        custom_terms=(
            CustomTermIn(kind="legal", text="Liability cap raised to 2x annual fees."),
            CustomTermIn(
                kind="security",
                text="Customer Data is hosted exclusively in the EU (Frankfurt).\n"
                "Annual penetration test summary shared within 30 days.",
            ),
            CustomTermIn(kind="payment", text="First invoice issued on go-live, not signature."),
        ),
    )


def make_quote(
    *, reverse_charge: bool = True, total: Decimal | None = None, currency: str = "EUR"
) -> Quote:
    """A 24-month quote: 150 seats x 240 x 2 years + 8,000 onboarding, 10% off."""
    subtotal = Decimal("80000.00")
    discount = Decimal("8000.00")
    taxable = subtotal - discount
    tax = (
        TaxResult(
            jurisdiction="EU-DE",
            rate_pct=Decimal("0"),
            amount=Decimal("0.00"),
            reverse_charge=True,
            note="Intra-EU B2B supply of services to a VAT-registered customer.",
        )
        if reverse_charge
        else TaxResult(
            jurisdiction="US-NY",
            rate_pct=Decimal("8.875"),
            amount=Decimal("6390.00"),
            note="New York State and NYC sales tax on software as a service.",
        )
    )
    if total is None:
        total = taxable + tax.amount
    return Quote(
        currency=currency,
        lines=(
            PricedLine(
                sku="DF-PLAT-ENT",
                description="dealflow Platform, Enterprise edition (per seat, per year)",
                quantity=Decimal("150"),
                unit_price=Decimal("240.00"),
                line_total=Decimal("72000.00"),
            ),
            PricedLine(
                sku="DF-ONB-PRO",
                description="Professional onboarding (one-off)",
                quantity=Decimal("1"),
                unit_price=Decimal("8000.00"),
                line_total=Decimal("8000.00"),
            ),
        ),
        subtotal=subtotal,
        discount_pct=Decimal("10"),
        discount=discount,
        taxable_amount=taxable,
        tax=tax,
        total=total,
        term_months=24,
        billing_frequency="annual",
        payment_schedule=(
            Installment(seq=1, period_start_month=0, period_months=12, amount=total / 2),
            Installment(seq=2, period_start_month=12, period_months=12, amount=total / 2),
        ),
        revenue_schedule=tuple(
            RevenueMonth(month_index=i, amount=Decimal("3000.00")) for i in range(24)
        ),
    )


def make_context(**overrides: Any) -> dict[str, Any]:
    deal = overrides.pop("deal", None) or make_deal()
    quote = overrides.pop("quote", None) or make_quote()
    args: dict[str, Any] = {
        "deal": deal,
        "quote": quote,
        "version": 3,
        "seller": SELLER,
        "generated_at": GENERATED_AT,
        "choices": CHOICES,
    }
    args.update(overrides)
    return contract_context(**args)


@pytest.fixture(scope="module")
def renderer() -> Iterator[DocumentRenderer]:
    yield DocumentRenderer()


# --- filters ---------------------------------------------------------------------------------


def test_money_uses_the_currency_minor_units() -> None:
    assert format_money(Decimal("47500"), "USD") == "47,500.00 USD"
    assert format_money(Decimal("1234567.005"), "EUR") == "1,234,567.01 EUR"
    assert format_money(Decimal("1500000"), "JPY") == "1,500,000 JPY"
    assert format_money(Decimal("-0.001"), "USD") == "0.00 USD"


def test_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_money(0.1, "USD")  # type: ignore[arg-type]


def test_pct_drops_trailing_zeros() -> None:
    assert format_pct(Decimal("10.00")) == "10%"
    assert format_pct(Decimal("8.875")) == "8.875%"
    assert format_pct(Decimal("0")) == "0%"


# --- context ---------------------------------------------------------------------------------


def test_context_orders_signers_by_routing_order_and_assigns_anchors() -> None:
    ctx = make_context()
    assert [s.name for s in ctx["signers"]] == ["Jonas Richter", "Dr. Katrin Weber"]
    assert [b["sign_anchor"] for b in ctx["signature_blocks"]] == ["/sn1/", "/sn2/"]
    assert ctx["seller"]["name"] == "dealflow Inc."
    assert ctx["seller"]["governing_law"] == DEFAULT_SELLER["governing_law"]
    assert ctx["page_size"] == "A4"
    assert ctx["annual_value"] == Decimal("36000")


def test_context_refuses_naive_generated_at_and_currency_mismatch() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_context(generated_at=datetime(2025, 3, 14))  # noqa: DTZ001
    with pytest.raises(ValueError, match="currency"):
        make_context(quote=make_quote(currency="USD"))


# --- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize("template", sorted(TEMPLATES.values()))
def test_every_template_renders_with_the_contract_context(
    renderer: DocumentRenderer, template: str
) -> None:
    html = renderer.render_html(template, make_context())
    assert "dealflow Inc." in html
    assert "DL-2025-0042" in html
    assert "DL-2025-0042-Q3" in html
    assert "2025-03-14" in html
    assert "Müller Logistik GmbH" in html


@pytest.mark.parametrize("template", sorted(TEMPLATES.values()))
def test_a_missing_context_key_fails_the_render(renderer: DocumentRenderer, template: str) -> None:
    ctx = make_context()
    del ctx["seller"]
    with pytest.raises(RenderError, match="seller"):
        renderer.render_html(template, ctx)


def test_order_form_shows_totals_tax_schedule_terms_and_signers(
    renderer: DocumentRenderer,
) -> None:
    html = renderer.render_html(TEMPLATES["order_form"], make_context())
    assert "Total (EUR)" in html and "72,000.00 EUR" in html
    assert "80,000.00 EUR" in html  # subtotal
    assert "Discount (10%)" in html and "8,000.00 EUR" in html
    assert "EU-DE" in html
    assert "Intra-EU B2B supply of services to a VAT-registered customer." in html
    assert "Reverse charge." in html and "DE811907980" in html
    assert "Net 45 days from the invoice date" in html
    assert "Months 1&ndash;12" in html or "Months 1–12" in html
    assert "Months 13&ndash;24" in html or "Months 13–24" in html
    assert html.count("36,000.00 EUR") == 2  # one row per installment
    assert "Liability cap raised to 2x annual fees." in html
    assert "First invoice issued on go-live, not signature." in html
    # Every signer, in routing order, each with its own DocuSign anchors.
    richter, weber = html.index("Jonas Richter"), html.index("Dr. Katrin Weber")
    assert richter < weber
    for anchor in ("/sn1/", "/ds1/", "/sn2/", "/ds2/"):
        assert html.count(anchor) == 1
    assert "Chief Financial Officer" in html and "k.weber@mueller-logistik.de" in html


def test_order_form_omits_reverse_charge_note_for_domestic_tax(
    renderer: DocumentRenderer,
) -> None:
    deal = make_deal(country="US", tax_id=None)
    quote = make_quote(reverse_charge=False)
    html = renderer.render_html(TEMPLATES["order_form"], make_context(deal=deal, quote=quote))
    assert "Reverse charge" not in html
    assert "US-NY (8.875%)" in html
    assert "78,390.00 EUR" in html
    assert "New York State and NYC sales tax on software as a service." in html
    assert "size: Letter" in html


def test_customer_supplied_text_is_escaped(renderer: DocumentRenderer) -> None:
    evil = '<script>alert("x")</script> & Co'
    deal = make_deal(
        customer_name=evil,
        signers=(SignerIn(name="<b>Eve</b>", email="eve@example.com", routing_order=1),),
    )
    for template in TEMPLATES.values():
        html = renderer.render_html(template, make_context(deal=deal))
        assert "<script>" not in html
        assert "<b>Eve</b>" not in html
        assert "&lt;script&gt;" in html


def test_security_exhibit_reproduces_security_terms_verbatim(renderer: DocumentRenderer) -> None:
    html = renderer.render_html(TEMPLATES["security_exhibit"], make_context())
    assert (
        "Customer Data is hosted exclusively in the EU (Frankfurt).\n"
        "Annual penetration test summary shared within 30 days."
    ) in html
    assert "SOC 2 Type II" in html


def test_msa_and_dpa_carry_the_deal_specific_clauses(renderer: DocumentRenderer) -> None:
    msa = renderer.render_html(TEMPLATES["msa"], make_context())
    assert "net 45 days" in msa
    assert "the State of Delaware" in msa
    dpa = renderer.render_html(TEMPLATES["dpa"], make_context())
    assert "within 72 hours" in dpa
    assert "Article 28" in dpa and "Standard Contractual Clauses" in dpa


def test_executive_summary_states_value_term_and_items(renderer: DocumentRenderer) -> None:
    html = renderer.render_html(TEMPLATES["executive_summary"], make_context())
    assert "72,000.00 EUR" in html
    assert "36,000.00 EUR" in html  # annual value, net of discount, before tax
    assert "24 months" in html
    assert "Professional onboarding (one-off)" in html
    assert "14 March 2025" in html


# --- PDF -------------------------------------------------------------------------------------


def _inflated_streams(pdf: bytes) -> bytes:
    """Every Flate stream inflated: WeasyPrint packs the info dictionary in an object stream."""
    out = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.DOTALL):
        try:
            out.append(zlib.decompress(match.group(1)))
        except zlib.error:
            continue
    return b"\n".join(out)


def test_pdf_is_deterministic_and_hashes_identify_it(
    renderer: DocumentRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_context()
    first = renderer.render(TEMPLATES["order_form"], ctx, title="Order Form", created=GENERATED_AT)
    # A day later by the wall clock (font subsetting would otherwise stamp it into the fonts).
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 86_400)
    second = renderer.render(TEMPLATES["order_form"], ctx, title="Order Form", created=GENERATED_AT)
    assert first.pdf.startswith(b"%PDF-")
    assert len(first.pdf) > 5_000
    assert first.pdf == second.pdf
    assert first.pdf_sha256 == hashlib.sha256(first.pdf).hexdigest() == second.pdf_sha256
    assert first.html_sha256 == hashlib.sha256(first.html.encode()).hexdigest()
    info = _inflated_streams(first.pdf)
    assert b"/CreationDate (D:20250314093000+00'00)" in info
    assert b"/ModDate (D:20250314093000+00'00)" in info


def test_different_inputs_give_different_hashes(renderer: DocumentRenderer) -> None:
    base = renderer.render(
        TEMPLATES["order_form"], make_context(), title="Order Form", created=GENERATED_AT
    )
    other_total = renderer.render(
        TEMPLATES["order_form"],
        make_context(quote=make_quote(total=Decimal("72000.01"))),
        title="Order Form",
        created=GENERATED_AT,
    )
    later = renderer.render(
        TEMPLATES["order_form"],
        make_context(),
        title="Order Form",
        created=datetime(2025, 3, 15, tzinfo=UTC),
    )
    assert base.html_sha256 != other_total.html_sha256
    assert len({base.pdf_sha256, other_total.pdf_sha256, later.pdf_sha256}) == 3
    assert base.html_sha256 == later.html_sha256  # only the PDF metadata date differs


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_every_template_renders_to_pdf(renderer: DocumentRenderer, kind: str) -> None:
    doc = renderer.render(TEMPLATES[kind], make_context(), title=kind, created=GENERATED_AT)
    assert doc.pdf.startswith(b"%PDF-")


def test_pdf_refuses_remote_and_outside_resources(renderer: DocumentRenderer) -> None:
    for src in ("https://example.com/logo.png", Path("/etc/hostname").as_uri()):
        html = f'<html><body><img src="{src}"></body></html>'
        with pytest.raises(RenderError, match="Error fetching"):
            renderer.html_to_pdf(html, title="t", created=GENERATED_AT)


def test_pdf_requires_an_aware_created_time(renderer: DocumentRenderer) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        renderer.html_to_pdf("<p>x</p>", title="t", created=datetime(2025, 1, 1))  # noqa: DTZ001
