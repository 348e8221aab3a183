"""Contract documents: Jinja2 templates to HTML, HTML to PDF with WeasyPrint.

Why it is shaped like this:

- One :class:`DocumentRenderer` per process keeps one Jinja ``Environment`` (templates are
  compiled once and cached) and pays WeasyPrint's Pango/fontconfig start-up once
  (:meth:`DocumentRenderer.warm_up`, before the first real deal). The worker keeps one in each
  of its renderer processes (``dealflow/render_pool.py``), off its own event loop.
- The PDF is byte-for-byte deterministic for the same HTML, title and ``created`` time: the
  document is stored with its sha256, the signature envelope and the audit trail refer to that
  hash, and a retried activity must produce the very same file rather than a "new" contract.
  WeasyPrint would otherwise stamp the wall clock into the PDF in three places: we set the
  creation and modification dates from ``created``; we derive the PDF ``/ID`` from the content;
  and, when fonts are subset with fontTools (no HarfBuzz-Subset library on the machine), the
  ``head.modified`` field of every embedded font is the current second unless
  ``SOURCE_DATE_EPOCH`` is set, so the renderer sets it (to a fixed date, only if unset: the
  reproducible-builds convention fontTools honours). We never ask for a PDF/A or PDF/UA
  variant, whose XMP packet carries a random ``uuid4``.
- Rendering never touches the network: relative URLs resolve against the templates folder and
  the URL fetcher refuses anything that is not a file inside it (or a ``data:`` URL). A template
  that points elsewhere fails loudly instead of silently rendering without the resource.
- Templates run with ``StrictUndefined`` and autoescaping: a missing field is a bug that must
  fail the render, and customer-supplied text (names, custom terms) is never markup.
- :func:`contract_context` builds the one context every contract template reads, so templates
  never compute money or read the clock themselves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import jinja2

from domain.models import DealTerms, DocumentChoice, Quote, SignerIn, TermKind
from domain.money import plain_decimal

__all__ = [
    "DEFAULT_SELLER",
    "DOCUMENT_TITLES",
    "TEMPLATES_DIR",
    "DocumentRenderer",
    "RenderError",
    "RenderedDocument",
    "contract_context",
    "format_money",
    "format_pct",
    "ordered_signers",
    "signature_anchors",
]

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

#: Seller identity printed on every document; any key can be overridden per call through
#: ``contract_context(seller=...)`` (e.g. a subsidiary selling in another region).
DEFAULT_SELLER: Mapping[str, str] = {
    "name": "dealflow Inc.",
    "legal_name": "dealflow Inc.",
    "entity_description": "a Delaware corporation",
    "address": "548 Market Street, Suite 1200, San Francisco, CA 94104, United States",
    "email": "contracts@dealflow.example",
    "billing_email": "billing@dealflow.example",
    "privacy_email": "privacy@dealflow.example",
    "security_email": "security@dealflow.example",
    "website": "https://dealflow.example",
    "tax_id": "EIN 88-0000000",
    "signatory_name": "",
    "signatory_title": "Authorized Signatory",
    "governing_law": "the State of Delaware, United States of America",
    "venue": "the state and federal courts located in New Castle County, Delaware",
}

# Fixed font timestamp (2000-01-01T00:00:00Z) for fontTools subsetting; see the module docstring.
_FONT_SOURCE_DATE_EPOCH = "946684800"

# ISO 4217 currencies whose minor unit is 0 decimals; every other currency we sell in uses 2.
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW"})

# Letter paper where customers expect it; A4 everywhere else.
_LETTER_COUNTRIES = frozenset({"US", "CA", "MX", "PH", "CL", "CO", "VE"})

#: Printed title of each document kind: the templates' headings and the PDF title to pass to
#: :meth:`DocumentRenderer.render`.
DOCUMENT_TITLES: Mapping[str, str] = {
    "order_form": "Order Form",
    "msa": "Master Subscription Agreement",
    "dpa": "Data Processing Addendum",
    "security_exhibit": "Security Exhibit",
    "executive_summary": "Executive Summary",
}

_BILLING_LABELS = {"annual": "Annually", "quarterly": "Quarterly", "monthly": "Monthly"}

_TERM_KINDS: tuple[TermKind, ...] = ("legal", "security", "payment", "other")

# Display names for the countries we most often sell to; any other code prints as the code.
_COUNTRY_NAMES = {
    "AE": "United Arab Emirates",
    "AT": "Austria",
    "AU": "Australia",
    "BE": "Belgium",
    "BR": "Brazil",
    "CA": "Canada",
    "CH": "Switzerland",
    "CZ": "Czech Republic",
    "DE": "Germany",
    "DK": "Denmark",
    "ES": "Spain",
    "FI": "Finland",
    "FR": "France",
    "GB": "United Kingdom",
    "GR": "Greece",
    "HK": "Hong Kong",
    "IE": "Ireland",
    "IL": "Israel",
    "IN": "India",
    "IT": "Italy",
    "JP": "Japan",
    "KR": "South Korea",
    "LU": "Luxembourg",
    "MX": "Mexico",
    "NL": "Netherlands",
    "NO": "Norway",
    "NZ": "New Zealand",
    "PL": "Poland",
    "PT": "Portugal",
    "SE": "Sweden",
    "SG": "Singapore",
    "US": "United States",
    "ZA": "South Africa",
}


class RenderError(Exception):
    """A contract could not be rendered (template bug, refused resource, bad input).

    An ordinary ``Exception`` so activities can report it as a non-retryable failure: retrying
    the same template with the same inputs fails the same way.
    """


@dataclass(frozen=True, slots=True)
class RenderedDocument:
    """One rendered document, with the hashes that identify it in storage and the audit trail."""

    template: str
    title: str
    html: str
    pdf: bytes
    pdf_sha256: str
    html_sha256: str


# --------------------------------------------------------------------------------------------
# Filters


def _as_decimal(value: Any) -> Decimal:
    # Floats are refused: money and percentages stay exact from the API to the PDF.
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"expected a Decimal, int or str, got {type(value).__name__}")
    if isinstance(value, int | str):
        return Decimal(value)
    raise TypeError(f"expected a Decimal, int or str, got {type(value).__name__}")


def format_money(amount: Decimal | int | str, currency: str) -> str:
    """``Decimal("47500") , "USD"`` -> ``"47,500.00 USD"``; JPY/KRW print without decimals."""
    places = 0 if currency.upper() in _ZERO_DECIMAL_CURRENCIES else 2
    value = _as_decimal(amount).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if value == 0:
        value = abs(value)  # never print "-0.00"
    return f"{value:,.{places}f} {currency.upper()}"


def format_pct(value: Decimal | int | str) -> str:
    """``Decimal("12.50")`` -> ``"12.5%"``: percentages are stored as percent numbers (10 = 10%)."""
    return f"{plain_decimal(_as_decimal(value))}%"


def _format_quantity(value: Decimal | int | str) -> str:
    """``Decimal("1500.00")`` -> ``"1,500"``; fractional quantities keep their digits."""
    return plain_decimal(_as_decimal(value), grouping=True)


def _country_name(code: str) -> str:
    return _COUNTRY_NAMES.get(code.upper(), code.upper())


def _long_date(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


# --------------------------------------------------------------------------------------------
# Renderer


class DocumentRenderer:
    """Renders contract templates to HTML and PDF. Build one per process and reuse it."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        # Process-wide but constant, so concurrent renders cannot race on it; see module docstring.
        os.environ.setdefault("SOURCE_DATE_EPOCH", _FONT_SOURCE_DATE_EPOCH)
        self.templates_dir = (templates_dir or TEMPLATES_DIR).resolve()
        self._base_url = self.templates_dir.as_uri() + "/"
        # WeasyPrint loads here, in the processes that render (about a second of CPU to import):
        # the worker builds contexts and hands renders to its renderer processes, so it starts
        # without it. See dealflow/pdf.py.
        from dealflow import pdf

        self._pdf = pdf
        self._fetcher = pdf.LocalOnlyFetcher(self.templates_dir)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # templates ship with the code; skip the mtime check per render
        )
        self.env.filters.update(
            money=format_money,
            pct=format_pct,
            qty=_format_quantity,
            country=_country_name,
            long_date=_long_date,
        )

    def render_html(self, template: str, context: Mapping[str, Any]) -> str:
        """Render ``template`` (a path under the templates folder) with ``context``."""
        try:
            return self.env.get_template(template).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{template}: {exc}") from exc

    def html_to_pdf(self, html: str, *, title: str, created: datetime) -> bytes:
        """Lay out ``html`` as a PDF whose bytes depend only on ``html``, ``title``, ``created``.

        ``created`` must be timezone-aware (it comes from ``workflow.now()`` or the stored quote);
        it becomes both the creation and modification date, in UTC, to the second.
        """
        if created.tzinfo is None or created.utcoffset() is None:
            raise ValueError("created must be timezone-aware")
        stamp = created.astimezone(UTC).replace(microsecond=0).isoformat()
        identifier = hashlib.sha256(f"{stamp}\n{title}\n{html}".encode()).hexdigest()[:32]
        return self._pdf.write_pdf(
            html,
            base_url=self._base_url,
            fetcher=self._fetcher,
            title=title,
            stamp=stamp,
            identifier=identifier,
        )

    def render(
        self, template: str, context: Mapping[str, Any], *, title: str, created: datetime
    ) -> RenderedDocument:
        """Render ``template`` to HTML and PDF, with the sha256 of each."""
        html = self.render_html(template, context)
        pdf = self.html_to_pdf(html, title=title, created=created)
        return RenderedDocument(
            template=template,
            title=title,
            html=html,
            pdf=pdf,
            pdf_sha256=hashlib.sha256(pdf).hexdigest(),
            html_sha256=hashlib.sha256(html.encode("utf-8")).hexdigest(),
        )

    def warm_up(self) -> None:
        """Pay WeasyPrint's one-off font set-up (about a second) before the first real deal."""
        self.html_to_pdf(
            "<!DOCTYPE html><html><body><p>warm-up</p></body></html>",
            title="warm-up",
            created=datetime(2000, 1, 1, tzinfo=UTC),
        )


# --------------------------------------------------------------------------------------------
# Context


def ordered_signers(signers: Sequence[SignerIn]) -> tuple[SignerIn, ...]:
    """Signers in routing order (ties by name), the order DocuSign will route the envelope."""
    return tuple(sorted(signers, key=lambda s: (s.routing_order, s.name, s.email)))


def signature_anchors(position: int) -> tuple[str, str]:
    """DocuSign anchor strings (sign here, date signed) for the 1-based signer ``position``.

    The order form prints them invisibly on each signature line so the signature activity can
    place tabs with ``anchorString`` instead of page coordinates that move with the content.
    """
    return f"/sn{position}/", f"/ds{position}/"


def contract_context(
    *,
    deal: DealTerms,
    quote: Quote,
    version: int,
    seller: Mapping[str, str],
    generated_at: datetime,
    choices: Sequence[DocumentChoice],
) -> dict[str, Any]:
    """The one context every contract template reads.

    Keys: ``deal``, ``quote``, ``customer`` (= ``deal.account``), ``version``, ``seller`` (defaults
    from :data:`DEFAULT_SELLER` overridden by ``seller``), ``signers`` (routing order),
    ``signature_blocks`` (``signer``, ``position``, ``sign_anchor``, ``date_anchor``),
    ``terms`` (custom term texts by kind: legal, security, payment, other), ``documents`` (the
    chosen documents), ``included`` (their kinds), ``document_titles``, ``document_ref``,
    ``generated_at``, ``generated_on`` (ISO date), ``page_size`` ("A4" or "Letter"),
    ``billing_label``, ``annual_value`` (net of discount, before tax, per 12 months).
    """
    if generated_at.tzinfo is None or generated_at.utcoffset() is None:
        raise ValueError("generated_at must be timezone-aware")
    if quote.currency != deal.currency:
        raise ValueError(
            f"quote currency {quote.currency} differs from deal currency {deal.currency}"
        )
    if version < 1:
        raise ValueError("quote versions start at 1")

    merged_seller = {**DEFAULT_SELLER, **seller}
    signers = ordered_signers(deal.signers)
    blocks = []
    for position, signer in enumerate(signers, start=1):
        sign_anchor, date_anchor = signature_anchors(position)
        blocks.append(
            {
                "signer": signer,
                "position": position,
                "sign_anchor": sign_anchor,
                "date_anchor": date_anchor,
            }
        )
    terms: dict[str, list[str]] = {kind: [] for kind in _TERM_KINDS}
    for term in deal.custom_terms:
        terms[term.kind].append(term.text)

    # Annualised recurring value net of discount and before tax: what executives compare deals by.
    annual_value = (
        quote.taxable_amount * 12 / quote.term_months if quote.term_months else quote.taxable_amount
    )

    return {
        "deal": deal,
        "quote": quote,
        "customer": deal.account,
        "version": version,
        "seller": merged_seller,
        "signers": signers,
        "signature_blocks": blocks,
        "terms": terms,
        "documents": tuple(choices),
        "included": frozenset(choice.kind for choice in choices),
        "document_titles": DOCUMENT_TITLES,
        "document_ref": f"{deal.deal_id}-Q{version}",
        "generated_at": generated_at,
        "generated_on": generated_at.date().isoformat(),
        "page_size": "Letter" if deal.account.country.upper() in _LETTER_COUNTRIES else "A4",
        "billing_label": _BILLING_LABELS[quote.billing_frequency],
        "annual_value": annual_value,
    }
