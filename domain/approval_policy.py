"""The approval policy: which people must approve a deal, in which stage, and why.

The policy is data (``config/approval_policy.toml``): thresholds, roles, stages and static FX
rates. This module implements a small, closed set of condition types and evaluates them, so a
policy change is a reviewed config change with a new version, not a code change. A plan records
the policy version and the SHA-256 of the file's bytes, so every decision can be traced to the
exact policy it was made under. Pure and deterministic: workflow code calls ``plan_approvals``.
"""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from os import PathLike
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.models import (
    ApprovalPlan,
    DealTerms,
    PlannedApproval,
    PlanStage,
    Quote,
    TermKind,
)
from domain.money import format_money, format_pct, quantize
from domain.regions import is_eea


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TotalAtLeast(_Frozen):
    """Fires when the quote total, in the reference currency, is at or above ``amount``."""

    type: Literal["total_at_least"]
    amount: Decimal


class DiscountAbove(_Frozen):
    """Fires when the discount is strictly above ``pct`` percent."""

    type: Literal["discount_above"]
    pct: Decimal


class CustomTermKind(_Frozen):
    """Fires when the deal carries at least one custom term of ``kind``."""

    type: Literal["custom_term_kind"]
    kind: TermKind


class PaymentTermsDaysAbove(_Frozen):
    """Fires when the payment terms are strictly longer than ``days``."""

    type: Literal["payment_terms_days_above"]
    days: int


class CountryInEea(_Frozen):
    """Fires when the customer's country is in the EU/EEA (GDPR applies)."""

    type: Literal["country_in_eea"]


Condition = Annotated[
    TotalAtLeast | DiscountAbove | CustomTermKind | PaymentTermsDaysAbove | CountryInEea,
    Field(discriminator="type"),
]


class PolicyRule(_Frozen):
    id: str
    role: str
    when: Condition


class RoleDef(_Frozen):
    label: str  # how the role is named in reasons, e.g. "Finance Director"
    stage: int
    sla_hours: Decimal = Decimal(24)
    sla_business_hours: bool = True  # count the SLA in the approver's business hours
    reminder_at: Decimal = Decimal("0.5")  # fraction of the SLA after which to remind
    expected_hours: Decimal = Decimal(8)  # expected decision time when there is no history
    # What an approval by this role covers (see domain.approval_inputs).
    reviews: tuple[str, ...] = ("total", "currency")


class ApprovalSettings(_Frozen):
    escalation_levels: int = 2
    link_ttl_hours: Decimal = Decimal(72)
    min_history: int = 3


class StageDef(_Frozen):
    index: int
    mode: Literal["all", "any"] = "all"


class DocumentThresholds(_Frozen):
    """Thresholds ``domain.documents.select_documents`` reads; both are at-or-above."""

    msa_total_at_least: Decimal  # in the reference currency
    msa_employees_at_least: int


class ApprovalPolicy(_Frozen):
    """A parsed, validated approval policy. ``sha256`` is set by ``load_policy``."""

    version: str
    sha256: str = ""
    reference_currency: str = "USD"
    fx_rates: dict[str, Decimal]
    documents: DocumentThresholds
    stages: tuple[StageDef, ...]
    roles: dict[str, RoleDef]
    approvals: ApprovalSettings = ApprovalSettings()
    rules: tuple[PolicyRule, ...]

    @field_validator("fx_rates")
    @classmethod
    def _rates_positive(cls, v: dict[str, Decimal]) -> dict[str, Decimal]:
        out = {}
        for code, rate in v.items():
            if rate <= 0:
                raise ValueError(f"FX rate for {code} must be positive, got {rate}")
            out[code.strip().upper()] = rate
        return out

    @model_validator(mode="after")
    def _consistent(self) -> ApprovalPolicy:
        if self.fx_rates.get(self.reference_currency) != 1:
            raise ValueError(
                f"fx_rates must contain the reference currency {self.reference_currency} = 1"
            )
        stage_ids = [s.index for s in self.stages]
        if len(set(stage_ids)) != len(stage_ids):
            raise ValueError(f"stage indexes must be unique, got {stage_ids}")
        for name, role in self.roles.items():
            if role.stage not in stage_ids:
                raise ValueError(f"role {name} is in stage {role.stage}, which is not defined")
        rule_ids = [r.id for r in self.rules]
        if len(set(rule_ids)) != len(rule_ids):
            raise ValueError("rule ids must be unique")
        for rule in self.rules:
            if rule.role not in self.roles:
                raise ValueError(f"rule {rule.id} names unknown role {rule.role}")
        return self


def load_policy(path: str | PathLike[str]) -> ApprovalPolicy:
    """Read the policy TOML at ``path``; ``sha256`` is the hash of the file's exact bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    data = tomllib.loads(raw.decode("utf-8"), parse_float=Decimal)
    data["sha256"] = hashlib.sha256(raw).hexdigest()
    return ApprovalPolicy.model_validate(data)


def known_currencies(policy: ApprovalPolicy) -> frozenset[str]:
    """Currencies the policy can convert, so validation can refuse a deal in any other one."""
    return frozenset(policy.fx_rates)


def to_reference(amount: Decimal, currency: str, policy: ApprovalPolicy) -> Decimal:
    """``amount`` converted to the policy's reference currency, rounded to its minor unit.

    Rounded so that the figure shown in a reason is exactly the figure compared with the
    threshold. Raises ValueError for a currency the policy has no rate for.
    """
    rate = policy.fx_rates.get(currency.strip().upper())
    if rate is None:
        raise ValueError(
            f"Unknown currency {currency!r}: approval policy {policy.version} has no FX rate for "
            f"it (known: {', '.join(sorted(policy.fx_rates))})."
        )
    return quantize(amount * rate, policy.reference_currency)


def _total_text(quote: Quote, total_ref: Decimal, policy: ApprovalPolicy) -> str:
    text = format_money(quote.total, quote.currency)
    if quote.currency.upper() != policy.reference_currency:
        rate = policy.fx_rates[quote.currency.upper()]
        text += (
            f" ({format_money(total_ref, policy.reference_currency)} at the policy rate of {rate})"
        )
    return text


def _excerpt(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _reason(
    rule: PolicyRule,
    label: str,
    deal: DealTerms,
    quote: Quote,
    total_ref: Decimal,
    policy: ApprovalPolicy,
) -> str | None:
    """The written reason ``rule`` fires for this deal, or None when it does not fire."""
    cond = rule.when
    ref = policy.reference_currency
    if isinstance(cond, TotalAtLeast):
        if total_ref >= cond.amount:
            return (
                f"Total {_total_text(quote, total_ref, policy)} is at or above the "
                f"{format_money(cond.amount, ref)} {label} threshold."
            )
    elif isinstance(cond, DiscountAbove):
        if quote.discount_pct > cond.pct:
            return (
                f"Discount {format_pct(quote.discount_pct)} is above the "
                f"{format_pct(cond.pct)} {label} threshold."
            )
    elif isinstance(cond, CustomTermKind):
        terms = [t for t in deal.custom_terms if t.kind == cond.kind]
        if terms:
            quoted = "; ".join(f'"{_excerpt(t.text)}"' for t in terms)
            plural = "s" if len(terms) > 1 else ""
            return (
                f"The deal has {len(terms)} custom {cond.kind} term{plural} that {label} "
                f"must review: {quoted}."
            )
    elif isinstance(cond, PaymentTermsDaysAbove):
        if deal.payment_terms_days > cond.days:
            return (
                f"Payment terms of {deal.payment_terms_days} days are above the "
                f"{cond.days}-day {label} threshold."
            )
    elif isinstance(cond, CountryInEea):
        country = deal.account.country.upper()
        if is_eea(country):
            return (
                f"The customer is in {country}, inside the EU/EEA: {label} must review the "
                "GDPR data processing terms."
            )
    return None


def plan_approvals(deal: DealTerms, quote: Quote, policy: ApprovalPolicy) -> ApprovalPlan:
    """Every approval this deal needs, grouped in stages, each with the reasons it is needed.

    One approval per role, merging the reasons and rule ids of every rule that fired for it.
    Stages with no approval are left out and the remaining ones renumbered 0, 1, ... so that
    ``plan.stages[i].index == i``; roles inside a stage follow the policy's role order.
    Raises ValueError when the quote's currency has no FX rate in the policy.
    """
    total_ref = to_reference(quote.total, quote.currency, policy)

    fired: dict[str, tuple[list[str], list[str]]] = {}
    for rule in policy.rules:
        role = policy.roles[rule.role]
        reason = _reason(rule, role.label, deal, quote, total_ref, policy)
        if reason is not None:
            reasons, rule_ids = fired.setdefault(rule.role, ([], []))
            reasons.append(reason)
            rule_ids.append(rule.id)

    stages: list[PlanStage] = []
    for stage in sorted(policy.stages, key=lambda s: s.index):
        approvals = tuple(
            PlannedApproval(
                role=name, reasons=tuple(fired[name][0]), rule_ids=tuple(fired[name][1])
            )
            for name, role in policy.roles.items()
            if role.stage == stage.index and name in fired
        )
        if approvals:
            stages.append(PlanStage(index=len(stages), mode=stage.mode, approvals=approvals))

    return ApprovalPlan(
        policy_version=policy.version, policy_sha256=policy.sha256, stages=tuple(stages)
    )
