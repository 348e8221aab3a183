"""Which contract documents a deal's package contains, each with the reason it is included.

The thresholds come from the approval policy's ``[documents]`` table, so finance and legal
change them in one versioned file. Pure and deterministic: workflow code calls this directly.
"""

from __future__ import annotations

from domain.approval_policy import ApprovalPolicy, to_reference
from domain.models import DealTerms, DocumentChoice, Quote
from domain.money import format_money
from domain.regions import is_c_level, is_eea


def _doc(kind: str, reason: str) -> DocumentChoice:
    return DocumentChoice(kind=kind, template=f"contracts/{kind}.html.j2", reason=reason)


def select_documents(deal: DealTerms, quote: Quote, policy: ApprovalPolicy) -> list[DocumentChoice]:
    """The documents to render, always in the order order_form, msa, dpa, security_exhibit,
    executive_summary (only those that apply).

    Raises ValueError when the quote's currency has no FX rate in the policy.
    """
    docs = [_doc("order_form", "Every deal gets an order form.")]
    thresholds = policy.documents
    ref = policy.reference_currency

    msa_reasons: list[str] = []
    total_ref = to_reference(quote.total, quote.currency, policy)
    if total_ref >= thresholds.msa_total_at_least:
        shown = format_money(quote.total, quote.currency)
        if quote.currency.upper() != ref:
            shown += f" ({format_money(total_ref, ref)})"
        msa_reasons.append(
            f"the total {shown} is at or above {format_money(thresholds.msa_total_at_least, ref)}"
        )
    employees = deal.account.employees
    if employees is not None and employees >= thresholds.msa_employees_at_least:
        msa_reasons.append(
            f"{deal.account.name} has {employees:,} employees, at or above "
            f"{thresholds.msa_employees_at_least:,}"
        )
    if msa_reasons:
        because = " and ".join(msa_reasons)
        docs.append(_doc("msa", f"A master services agreement is needed: {because}."))

    country = deal.account.country.upper()
    if is_eea(country):
        docs.append(
            _doc(
                "dpa",
                f"The customer is in {country}, inside the EU/EEA: GDPR Art. 28 requires a "
                "data processing agreement.",
            )
        )

    security = [t for t in deal.custom_terms if t.kind == "security"]
    if security:
        plural = "s" if len(security) > 1 else ""
        docs.append(
            _doc(
                "security_exhibit",
                f"The deal has {len(security)} custom security term{plural}, set out in a "
                "security exhibit.",
            )
        )

    executives = [s for s in deal.signers if is_c_level(s.title)]
    if executives:
        names = ", ".join(f"{s.name} ({s.title})" for s in executives)
        docs.append(
            _doc(
                "executive_summary",
                f"C-level signer: {names}, so the package opens with an executive summary."
                if len(executives) == 1
                else f"C-level signers: {names}, so the package opens with an executive summary.",
            )
        )
    return docs
