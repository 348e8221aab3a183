"""The edge's field types and limits: what they refuse, and that the largest deal still fits."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError
from temporalio.service import RPCError, RPCStatusCode

from api.body_limit import BodyLimitMiddleware, body_limit_for
from api.fields import BoundedText, Currency, MoneyIn, Quantity, iso_currencies, storable
from api.schemas import DealCreate, LineItemCreate
from api.unavailable import TemporalUnavailable, is_unavailable
from dealflow import limits
from dealflow.links import InvalidToken, make_token, parse_token
from domain.pricing import price_quote, verify_quote
from tests.unit.factories import account, make_deal, signer, tax_table
from tests.utils.deals import deal_payload

NUMERIC_18_4_MAX = Decimal("99999999999999.9999")


@pytest.mark.parametrize(
    "value", ["", "plain", "Zoë & Søren — 日本語 🚀", "tab\tand\nnewline", "\u200b zero width"]
)
def test_storable_text_is_returned_unchanged(value):
    assert storable(value) == value


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("a\x00b", "NUL"),
        ("\x00", "NUL"),
        ("x\ud800", "surrogate (U+D800)"),
        ("\udfff tail", "surrogate (U+DFFF)"),
    ],
)
def test_storable_refuses_what_postgresql_cannot_hold(value, what):
    with pytest.raises(ValueError, match=re.escape(what)):
        storable(value)


def test_bounded_text_counts_characters_after_trimming_and_refuses_nul():
    adapter = TypeAdapter(BoundedText(5))
    assert adapter.validate_python("  abcde  ") == "abcde"
    with pytest.raises(ValidationError, match="at most 5 characters"):
        adapter.validate_python("abcdef")
    with pytest.raises(ValidationError, match="NUL"):
        adapter.validate_python("ab\x00")
    untrimmed = TypeAdapter(BoundedText(5, strip=False))
    assert untrimmed.validate_python(" ab ") == " ab "


@pytest.mark.parametrize("code", ["USD", "EUR", "GBP", "JPY", "CHF", "XOF", "KWD"])
def test_iso_4217_currencies_are_accepted(code):
    assert TypeAdapter(Currency).validate_python(code) == code


@pytest.mark.parametrize(
    "code", ["ZZZ", "ABC", "XXX", "XTS", "XAU", "XDR", "USN", "usd", "US", "EURO", "US\x00"]
)
def test_unknown_test_and_metal_currency_codes_are_refused(code):
    with pytest.raises(ValidationError):
        TypeAdapter(Currency).validate_python(code)
    assert code not in iso_currencies()


def test_money_and_quantity_refuse_more_decimals_than_the_columns_hold():
    assert TypeAdapter(MoneyIn).validate_python("0.0001") == Decimal("0.0001")
    with pytest.raises(ValidationError, match="4 decimal places"):
        TypeAdapter(MoneyIn).validate_python("0.00001")
    with pytest.raises(ValidationError, match="4 decimal places"):
        TypeAdapter(Quantity).validate_python("1.23456")
    with pytest.raises(ValidationError, match="less than or equal"):
        TypeAdapter(Quantity).validate_python(str(limits.MAX_QUANTITY + 1))
    with pytest.raises(ValidationError, match="less than or equal"):
        TypeAdapter(MoneyIn).validate_python("1e400")


def test_a_line_over_the_line_total_limit_is_refused():
    at_limit = {"sku": "A", "description": "", "quantity": "50000", "unit_price": "1000000"}
    assert LineItemCreate.model_validate(at_limit).quantity == 50000
    with pytest.raises(ValidationError, match="a line may total at most"):
        LineItemCreate.model_validate({**at_limit, "unit_price": "1000000.0001"})


def test_the_limits_arithmetic_keeps_the_largest_quote_inside_numeric_18_4():
    # The comment in dealflow/limits.py, checked: lines x line total x (1 + 100 % tax).
    assert limits.MAX_LINE_ITEMS * limits.MAX_LINE_TOTAL * 2 < limits.MAX_QUOTE_TOTAL
    assert limits.MAX_QUOTE_TOTAL - 1 <= NUMERIC_18_4_MAX


def test_the_largest_deal_the_edge_accepts_prices_within_the_columns():
    """Every line at the limit, no discount, the highest VAT of the table, the longest term."""
    qty, price = Decimal(limits.MAX_QUANTITY), Decimal(limits.MAX_LINE_TOTAL) / limits.MAX_QUANTITY
    payload = deal_payload(
        currency="EUR",
        term_months=limits.MAX_TERM_MONTHS,
        billing_frequency="monthly",
        discount_pct="0",
        line_items=[
            {"sku": f"L{i}", "description": "", "quantity": str(qty), "unit_price": str(price)}
            for i in range(limits.MAX_LINE_ITEMS)
        ],
        account={"name": "Big Kft.", "domain": "big.example", "country": "HU"},
    )
    accepted = DealCreate.model_validate(payload)
    deal = make_deal(
        currency="EUR",
        term_months=accepted.term_months,
        billing_frequency="monthly",
        discount_pct=accepted.discount_pct,
        line_items=tuple(
            {"sku": li.sku, "description": "", "quantity": li.quantity, "unit_price": li.unit_price}
            for li in accepted.line_items
        ),
        account=account(country="HU", region=None),
        signers=(signer(),),
    )
    quote = price_quote(deal, tax_table())
    assert quote.tax.rate_pct == 27
    assert verify_quote(quote) == []
    for figure in (quote.subtotal, quote.discount, quote.tax.amount, quote.total):
        assert abs(figure) <= NUMERIC_18_4_MAX
    assert quote.subtotal == limits.MAX_LINE_ITEMS * limits.MAX_LINE_TOTAL


def test_body_limits_per_route():
    assert body_limit_for("POST", "/v1/deals") == limits.MAX_JSON_BODY
    assert body_limit_for("POST", "/v1/webhooks/slack/interactions") == limits.MAX_JSON_BODY
    assert body_limit_for("POST", "/v1/webhooks/email/inbound") == limits.MAX_INBOUND_MAIL_BODY
    assert body_limit_for("POST", "/v1/deals/deal_1/signature/offline") == limits.MAX_UPLOAD_BODY
    assert body_limit_for("GET", "/v1/deals/deal_1/signature/offline") == limits.MAX_JSON_BODY
    assert body_limit_for("POST", "/v1/deals/a/b/signature/offline") == limits.MAX_JSON_BODY
    assert body_limit_for("POST", "/v1/campaigns") == limits.MAX_CAMPAIGN_BODY
    assert body_limit_for("POST", "/v1/campaigns/c_1/launch") == limits.MAX_JSON_BODY


KEY = "link-signing-key-for-tests"


def test_a_link_token_round_trips():
    token = make_token(KEY, "0123456789abcdef0123456789abcdef", 2_000_000_000)
    assert parse_token(KEY, token, now_unix=1_900_000_000) == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", "é", 1),  # non-ASCII where a dot was
        lambda t: t[:-1] + "é",  # non-ASCII in the signature (compare_digest raised on it)
        lambda t: t.replace("2000000000", "٢٠٠٠٠٠٠٠٠٠"),  # Arabic-Indic digits pass isdigit()
        lambda t: t.replace("2000000000", "9" * 5000),  # an absurd expiry
        lambda t: "x" * 100_000,
        lambda t: "",
        lambda t: "...",
        lambda t: t + ".extra",
        lambda t: "\x00" + t,
    ],
    ids=[
        "non-ascii-dot",
        "non-ascii-sig",
        "other-digits",
        "huge",
        "long",
        "empty",
        "dots",
        "4",
        "nul",
    ],
)
def test_a_malformed_link_token_is_invalid_not_an_exception(mangle):
    token = make_token(KEY, "0123456789abcdef0123456789abcdef", 2_000_000_000)
    with pytest.raises(InvalidToken):
        parse_token(KEY, mangle(token), now_unix=1_900_000_000)


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (RPCError("tcp connect error", RPCStatusCode.UNAVAILABLE, b""), True),
        (RPCError("deadline", RPCStatusCode.DEADLINE_EXCEEDED, b""), True),
        (RuntimeError("Failed client connect: Server connection error: ..."), True),
        (TemporalUnavailable("signal refused"), True),
        (RPCError("error trying to connect: transport error", RPCStatusCode.UNKNOWN, b""), True),
        (RPCError("something else went wrong", RPCStatusCode.UNKNOWN, b""), False),
        (RPCError("no such workflow", RPCStatusCode.NOT_FOUND, b""), False),
        (RPCError("bad request", RPCStatusCode.INVALID_ARGUMENT, b""), False),
        (RuntimeError("a bug"), False),
        (ValueError("Failed client connect"), False),
    ],
)
def test_which_errors_mean_temporal_is_unavailable(exc, unavailable):
    assert is_unavailable(exc) is unavailable


async def _through_middleware(headers: list[tuple[bytes, bytes]], body: bytes = b"") -> tuple:
    """Run one request through BodyLimitMiddleware in front of an app that reads the body."""
    seen: list[bytes] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/deals", "headers": headers}
    await BodyLimitMiddleware(app)(scope, receive, send)
    return sent[0]["status"], b"".join(seen)


async def test_the_middleware_refuses_a_content_length_that_is_not_a_number():
    for value in (b"12abc", b"-1", b"1" * 40, "١٢".encode()):
        status, read = await _through_middleware([(b"content-length", value)])
        assert (status, read) == (400, b""), value


async def test_the_middleware_counts_a_body_that_lies_about_its_length():
    body = b" " * (limits.MAX_JSON_BODY + 1)
    status, _ = await _through_middleware([(b"content-length", b"10")], body)
    assert status == 413
    status, read = await _through_middleware([(b"content-length", b"2")], b"{}")
    assert (status, read) == (200, b"{}")
