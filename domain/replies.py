"""Classify inbound mail to a campaign: bounce, complaint, auto-reply, or what the person wants.

A reply decides what a sequence does next (stop on a bounce, complaint or unsubscribe; pause
until the return date of an out-of-office; hand a meeting request to the rep), so every
classification records the rule that fired, and the rules run in a fixed order from the most
reliable evidence to the least:

1. structure written by machines: RFC 3464 delivery status reports, RFC 5965 ARF feedback
   reports (and the few providers' non-standard equivalents, such as Amazon SES notifications
   and Hotmail JMRP);
2. bounces from mail systems that ignore RFC 3464 (the sender is a mail system and the subject or
   body says delivery failed);
3. auto-reply headers (RFC 3834 ``Auto-Submitted`` and the common vendor headers);
4. auto-reply subjects and bodies (English, German, French, Spanish);
5. the intent of a human reply, read from the reply's own text with the quoted message removed,
   so quoting an auto-reply or a bounce does not make a reply one.

Everything is pure: no clock (the reference date for return dates is the ``received_on`` given or
the message's ``Date``), no network, no randomness, so workflows may call it directly.

Anyone on the internet can send us mail, so every step costs time linear in a bounded amount of
input (the numbers are in ``dealflow/limits.py``): :func:`parse_raw` reads a bounded prefix of
the message with a bounded number of MIME parts, header values are cut before the email package
parses them, text parts are decoded to a bounded size, and the rules read only the first
``MAX_CLASSIFIED_TEXT`` characters of the reply's own text (``Classification.truncated_to``
says so when a text was longer). No pattern here may backtrack super-linearly: repetitions are
bounded, anchored, or cannot overlap what follows them (``tests/unit/test_replies.py`` runs each
one on megabytes of adversarial input).
"""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from email.message import EmailMessage, Message
from email.parser import Parser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any, cast

from dealflow.limits import (
    MAX_CLASSIFIED_TEXT,
    MAX_DECODED_TEXT,
    MAX_MAIL_HEADER_VALUE,
    MAX_MAIL_HEADERS,
    MAX_MIME_PARTS,
    MAX_PARSED_MAIL,
)

__all__ = [
    "KINDS",
    "Classification",
    "classify_message",
    "classify_parts",
    "extract_return_date",
    "parse_raw",
    "readable_text",
    "storable",
    "strip_quoted",
]

KINDS: tuple[str, ...] = (
    "auto_reply",
    "bounce",
    "complaint",
    "unsubscribe",
    "interested",
    "meeting_request",
    "not_interested",
    "referral",
    "question",
    "objection",
    "other",
)

LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es")


@dataclass(frozen=True)
class Classification:
    """What an inbound message is, and the rule that decided it (for audits and tuning).

    ``return_date`` is set for auto-replies that say when the person is back, ``bounce_type``
    ("hard" or "soft") for bounces, and ``referral`` (``{"name", "email"}``, either may be None)
    for referrals. ``truncated_to`` is set when the reply's own text was longer than the rules
    read: only its first ``truncated_to`` characters were classified.
    """

    kind: str
    rule: str
    return_date: date | None = None
    bounce_type: str | None = None
    referral: dict[str, Any] | None = None
    truncated_to: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown classification kind {self.kind!r}")

    def as_json(self) -> dict[str, object]:
        """The webhook's ``classification`` object (optional fields only when set)."""
        out: dict[str, object] = {"kind": self.kind, "rule": self.rule}
        if self.return_date is not None:
            out["return_date"] = self.return_date.isoformat()
        if self.bounce_type is not None:
            out["bounce_type"] = self.bounce_type
        if self.referral is not None:
            out["referral"] = dict(self.referral)
        if self.truncated_to is not None:
            out["truncated_to"] = self.truncated_to
        return out


# =============================================================================================
# Reading a message
# =============================================================================================


class _BoundedPolicy(EmailPolicy):
    """``policy.default``, except that a header value is cut before it is parsed.

    The structured-header parser of the email package is super-linear in a value's length (a
    few hundred kilobytes of address list or encoded words take seconds); no real header is
    longer than ``MAX_MAIL_HEADER_VALUE``.
    """

    def header_fetch_parse(self, name, value):  # type: ignore[no-untyped-def]
        return super().header_fetch_parse(name, value[:MAX_MAIL_HEADER_VALUE])

    def header_store_parse(self, name, value):  # type: ignore[no-untyped-def]
        if isinstance(value, str):
            value = value[:MAX_MAIL_HEADER_VALUE]
        return super().header_store_parse(name, value)


POLICY = _BoundedPolicy()

# A line that may start a MIME part (a boundary delimiter always starts with "--").
_PART_START = re.compile(r"(?m)^--")


def parse_raw(raw: str) -> EmailMessage:
    """Parse an RFC 5322 message in time linear in its size, whatever it contains.

    Reads at most ``MAX_PARSED_MAIL`` characters, and stops before the ``MAX_MIME_PARTS``-th
    line starting with "--", so the message has at most that many parts and nesting levels
    (the parser's cost per line grows with the nesting depth, and it recurses per level). What
    lies beyond is an attachment or the returned original as far as classifying is concerned.
    A message the package still cannot parse is read as headers and a plain-text body.
    """
    text = raw[:MAX_PARSED_MAIL]
    for count, m in enumerate(_PART_START.finditer(text), start=1):
        if count >= MAX_MIME_PARTS:
            text = text[: m.start()]
            break
    parser = Parser(_class=EmailMessage, policy=POLICY)  # so every message is an EmailMessage
    try:
        return cast(EmailMessage, parser.parsestr(text))
    except (RecursionError, ValueError, TypeError, LookupError, IndexError):
        return cast(EmailMessage, parser.parsestr(text, headersonly=True))


def _raw_items(msg: Message) -> list[tuple[str, str]]:
    """The first ``MAX_MAIL_HEADERS`` headers, unparsed (get_all per name is a scan of all)."""
    try:
        items = msg.raw_items()
    except Exception:  # noqa: BLE001 - a compat32 Message built by hand may lack it
        return []
    out: list[tuple[str, str]] = []
    for name, value in items:
        if len(out) >= MAX_MAIL_HEADERS:
            break
        out.append((str(name), value if isinstance(value, str) else str(value)))
    return out


def _render(msg: Message, name: str, value: str) -> str:
    """One header value as text; malformed headers must not stop classification ("")."""
    try:
        policy_ = msg.policy
        fetched = policy_.header_fetch_parse(name, value[:MAX_MAIL_HEADER_VALUE])
        return str(fetched)
    except Exception:  # the email package raises assorted errors on junk headers
        return ""


def _header(msg: Message, name: str) -> str:
    """A header as text (all its occurrences joined); malformed headers give ""."""
    wanted = name.lower()
    parts = [_render(msg, n, v) for n, v in _raw_items(msg) if n.lower() == wanted]
    return " ".join(" ".join(parts).split())


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _is_text(part: Message) -> bool:
    """Only text is ever decoded into text: an image or a PDF is skipped, never read as words."""
    ctype = _content_type(part)
    return ctype.startswith("text/") or ctype.startswith("multipart/")


def _is_media(part: Message) -> bool:
    return _content_type(part).startswith(("image/", "audio/", "video/", "font/", "model/"))


# PostgreSQL refuses NUL in text and JSONB, and a lone surrogate cannot be encoded as UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` without the code points PostgreSQL cannot store (NUL, lone surrogates)."""
    return _UNSTORABLE.sub("", text)


def _decode(part: Message) -> str:
    """A leaf part's payload as text, whatever its transfer encoding and (declared) charset.

    At most ``MAX_DECODED_TEXT`` characters, with NUL and lone surrogates removed.
    """
    raw: bytes | None
    try:
        decoded = part.get_payload(decode=True)
        raw = decoded if isinstance(decoded, bytes) else None  # None: multipart
    except Exception:
        raw = None
    if raw is None:
        payload: object
        try:
            payload = part.get_payload()
        except Exception:  # undecodable bytes (surrogates) beside non-ASCII text: read it as is
            payload = getattr(part, "_payload", "")
        return storable(payload[:MAX_DECODED_TEXT]) if isinstance(payload, str) else ""
    raw = raw[: MAX_DECODED_TEXT * 4]  # UTF-8 takes at most 4 bytes a character
    charset = None
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    for candidate in (charset, "utf-8", "cp1252", "latin-1"):
        if not candidate:
            continue
        try:
            return storable(raw.decode(candidate)[:MAX_DECODED_TEXT])
        except (LookupError, UnicodeDecodeError):
            continue
    return storable(raw.decode("latin-1", errors="replace")[:MAX_DECODED_TEXT])  # pragma: no cover


def _children(part: Message) -> list[Message]:
    if not part.is_multipart():
        return []
    payload = part.get_payload()
    return [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []


def _walk(part: Message, *, into_attached: bool) -> Iterator[Message]:
    """Every part (at most ``MAX_MIME_PARTS``, depth first), optionally not descending into
    attached messages (message/rfc822). Iterative: nesting depth never meets the recursion limit.
    """
    stack = [part]
    seen = 0
    while stack and seen < MAX_MIME_PARTS:
        current = stack.pop()
        seen += 1
        yield current
        if not into_attached and _content_type(current) in ("message/rfc822", "message/global"):
            continue
        stack.extend(reversed(_children(current)))


def _is_attachment(part: Message) -> bool:
    try:
        return part.get_content_disposition() == "attachment"
    except Exception:
        return False


# Tag patterns never scan past a "<" ([^<>]), so a run of unclosed tags is read once, not once
# per tag; an element or comment that is never closed runs to the end (\Z) instead of being
# searched for again from every later start.
_BLOCK_END = re.compile(r"(?i)<\s*(br|/p|/div|/tr|/li|/h\d|hr)\b[^<>]*>")
_QUOTE_TAIL = re.compile(
    r"(?is)<(div|hr)\b[^<>]*?(gmail_quote|moz-cite-prefix|yahoo_quoted|divRplyFwdMsg|zwchr"
    r"|OutlookMessageHeader|appendonsend)[^<>]*>.*"
)
_HIDDEN_ELEMENT = re.compile(r"(?is)<(head|style|script)\b.*?(?:</\1\s*>|\Z)")
_COMMENT = re.compile(r"(?s)<!--.*?(?:-->|\Z)")
_BLOCKQUOTE_TAG = re.compile(r"(?i)<(/?)blockquote\b[^<>]*>")
_TAG = re.compile(r"<[^<>]+>")


def _drop_blockquotes(text: str) -> str:
    """Text outside <blockquote> elements (nested ones too), in one pass; unclosed: to the end."""
    out: list[str] = []
    depth = 0
    position = 0
    for m in _BLOCKQUOTE_TAG.finditer(text):
        if depth == 0:
            out.append(text[position : m.start()])
        if m.group(1):
            if depth > 0:
                depth -= 1
                if depth == 0:
                    out.append("\n")
        else:
            depth += 1
        position = m.end()
    if depth == 0:
        out.append(text[position:])
    return "".join(out)


def _html_to_text(markup: str) -> str:
    """Readable text from an HTML-only reply, with quoted blocks removed (good enough to read)."""
    text = _HIDDEN_ELEMENT.sub(" ", markup)
    text = _COMMENT.sub(" ", text)
    text = _QUOTE_TAIL.sub("", text)
    text = _drop_blockquotes(text)
    text = _BLOCK_END.sub("\n", text)
    text = _TAG.sub("", text)
    text = html.unescape(text).replace("\xa0", " ")
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


def _readable_body(msg: Message) -> str:
    """The message's own text: the first inline text/plain (or HTML) outside attached messages."""
    html_body = None
    for part in _walk(msg, into_attached=False):
        if part is not msg and _content_type(part) in ("message/rfc822", "message/global"):
            continue
        ctype = _content_type(part)
        if part.is_multipart() or _is_attachment(part):
            continue
        if ctype == "text/plain" or ctype.startswith("multipart/"):
            # (a multipart that is not is_multipart() has a broken boundary: read it as text)
            return _decode(part)
        if ctype == "text/html" and html_body is None:
            html_body = _html_to_text(_decode(part))
    return html_body or ""


def readable_text(msg: Message) -> str:
    """The message's own text as a person wrote it (quotes not yet stripped), storable: no NUL,
    no lone surrogates, no bytes of an image or other non-text part, at most
    ``MAX_DECODED_TEXT`` characters."""
    return _readable_body(msg)


def _report_text(msg: Message) -> str:
    """All the text a mail system wrote: body parts plus delivery-status and feedback fields.

    Attached original messages are left out, since their text is the sender's, not the report's.
    """
    chunks: list[str] = []
    for part in _walk(msg, into_attached=False):
        ctype = _content_type(part)
        if ctype in (
            "message/delivery-status",
            "message/global-delivery-status",
            "message/feedback-report",
        ):
            blocks = _children(part)
            if blocks:
                for block in blocks[:MAX_MIME_PARTS]:
                    chunks.append(
                        "\n".join(f"{k}: {_render(block, k, v)}" for k, v in _raw_items(block))
                    )
            else:
                chunks.append(_decode(part))
        elif ctype in ("text/rfc822-headers", "text/html") or part.is_multipart():
            continue
        elif _is_text(part) or (not msg.is_multipart() and not _is_media(part)):
            # multipart/* here is one whose boundary is broken: it only parses as opaque text.
            chunks.append(_decode(part))
        if sum(len(c) for c in chunks) >= MAX_CLASSIFIED_TEXT:
            break  # a report's text is a few kilobytes; the rules read no more than this
    return "\n".join(chunks)[:MAX_CLASSIFIED_TEXT]


def _attached_messages(msg: Message) -> list[Message]:
    found: list[Message] = []
    for part in _walk(msg, into_attached=False):
        if part is not msg and _content_type(part) in ("message/rfc822", "message/global"):
            found.extend(_children(part))
    return found


def _has_returned_original(msg: Message) -> bool:
    return any(
        _content_type(p) in ("message/rfc822", "message/global", "text/rfc822-headers")
        for p in _walk(msg, into_attached=False)
        if p is not msg
    )


# =============================================================================================
# Quoted text
# =============================================================================================

_ATTRIBUTIONS = (
    re.compile(r"(?is)^\s*On\b.{0,250}\bwrote\s*:\s*$"),
    re.compile(r"(?is)^\s*Am\b.{0,250}\bschrieb\b.{0,120}:\s*$"),
    re.compile(r"(?is)^\s*Le\b.{0,250}\ba\s+écrit\s*:\s*$"),
    re.compile(r"(?is)^\s*El\b.{0,250}\bescribió\s*:\s*$"),
)
# Any short line ending in ":" that names an address or a date, directly above a quoted block
# (clients in other languages, e.g. Android's Russian "... написал:").
_GENERIC_ATTRIBUTION = re.compile(
    r"(?is)^(?=.{0,300}$)(?=.*(@|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d\d)).*:\s*$"
)
# Whitespace runs are matched by one repetition each, never by two adjacent ones that could
# share the run ("\s*x?\s*" is quadratic on a line of spaces).
_SEPARATOR = re.compile(
    r"(?i)^\s*(?:(?:-{2,}|_{2,})\s*)?("
    r"original message|ursprüngliche nachricht|originalnachricht|message d'origine"
    r"|mensaje original|forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado)\s*(?:(?:-{2,}|_{2,})\s*)?$"
)
_SIGNATURE = re.compile(
    r"(?i)^(--\s?|sent from my \w+.*|von meinem \w+ gesendet.*|envoyé de mon \w+.*"
    r"|enviado desde mi \w+.*|get outlook for \w+.*)$"
)
_HEADER_FROM = re.compile(r"(?i)^\s*(?:\*\s*)?(from|von|de|da)\s*(?:\*\s*)?:\s*\S")
_HEADER_NEXT = re.compile(
    r"(?i)^\s*(?:\*\s*)?(sent|date|gesendet|datum|envoyé|enviado|fecha|to|an|à|para|subject"
    r"|betreff|objet|asunto|cc)(\s+el)?\s*(?:\*\s*)?:"
)
_UNDERSCORE_RULE = re.compile(r"^[ \t]*_{8,}[ \t]*$")


def _is_header_block(lines: Sequence[str], i: int) -> bool:
    """Outlook's "From: ... / Sent: ... / To: ... / Subject: ..." block starts at line ``i``."""
    if not _HEADER_FROM.match(lines[i]):
        return False
    following = [ln for ln in lines[i + 1 : i + 6] if ln.strip()]
    return sum(1 for ln in following if _HEADER_NEXT.match(ln)) >= 2


def _next_nonblank(lines: Sequence[str], i: int) -> str:
    for line in lines[i:]:
        if line.strip():
            return line
    return ""


def strip_quoted(text: str) -> str:
    """The text the person wrote, without the quoted message, signature or forwarded block.

    Quoted lines (">"), attribution lines ("On ... wrote:", "Am ... schrieb", "Le ... a écrit",
    "El ... escribió"), "-----Original Message-----" separators and Outlook "From: ... Sent:"
    header blocks are removed. An attribution above ">" lines only drops itself and the quote,
    so bottom-posted replies keep the text under the quote; one that is not followed by ">"
    lines (Outlook style) cuts everything after it.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if _SEPARATOR.match(stripped) or _is_header_block(lines, i):
            break
        if _UNDERSCORE_RULE.match(line) and _HEADER_FROM.match(_next_nonblank(lines, i + 1)):
            break
        if _SIGNATURE.match(line.rstrip()) and (
            line.rstrip() in ("--", "-- ") or len(stripped) < 60
        ):
            break
        attribution_end = None
        if stripped and not stripped.startswith(">"):
            for span in (1, 2, 3):
                joined = " ".join(ln.strip() for ln in lines[i : i + span])
                if any(p.match(joined) for p in _ATTRIBUTIONS):
                    attribution_end = i + span
                    break
            if attribution_end is None:
                for span in (1, 2):
                    joined = " ".join(ln.strip() for ln in lines[i : i + span])
                    follows = _next_nonblank(lines, i + span).lstrip()
                    if _GENERIC_ATTRIBUTION.match(joined) and follows.startswith(">"):
                        attribution_end = i + span
                        break
        if attribution_end is not None:
            if _next_nonblank(lines, attribution_end).lstrip().startswith(">"):
                i = attribution_end
                continue
            break
        if stripped.startswith(">"):
            i += 1
            continue
        out.append(line.rstrip())
        i += 1
    return "\n".join(out).strip()


# =============================================================================================
# Return dates
# =============================================================================================

_MONTHS: dict[str, dict[str, int]] = {
    "en": {
        "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
        "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
        "september": 9, "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11,
        "nov": 11, "december": 12, "dec": 12,
    },
    "de": {
        "januar": 1, "jänner": 1, "jan": 1, "februar": 2, "feb": 2, "märz": 3, "maerz": 3,
        "mär": 3, "april": 4, "apr": 4, "mai": 5, "juni": 6, "jun": 6, "juli": 7, "jul": 7,
        "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9, "oktober": 10, "okt": 10,
        "november": 11, "nov": 11, "dezember": 12, "dez": 12,
    },
    "fr": {
        "janvier": 1, "janv": 1, "février": 2, "fevrier": 2, "févr": 2, "fevr": 2, "mars": 3,
        "avril": 4, "avr": 4, "mai": 5, "juin": 6, "juillet": 7, "juil": 7, "août": 8,
        "aout": 8, "septembre": 9, "sept": 9, "octobre": 10, "oct": 10, "novembre": 11,
        "nov": 11, "décembre": 12, "decembre": 12, "déc": 12, "dec": 12,
    },
    "es": {
        "enero": 1, "ene": 1, "febrero": 2, "feb": 2, "marzo": 3, "abril": 4, "abr": 4,
        "mayo": 5, "junio": 6, "julio": 7, "agosto": 8, "ago": 8, "septiembre": 9,
        "setiembre": 9, "sept": 9, "octubre": 10, "oct": 10, "noviembre": 11, "nov": 11,
        "diciembre": 12, "dic": 12,
    },
}  # fmt: skip

_WEEKDAYS: dict[str, dict[str, int]] = {
    "en": {
        "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4,
        "saturday": 5, "sunday": 6,
    },
    "de": {
        "montag": 0, "dienstag": 1, "mittwoch": 2, "donnerstag": 3, "freitag": 4,
        "samstag": 5, "sonntag": 6,
    },
    "fr": {
        "lundi": 0, "mardi": 1, "mercredi": 2, "jeudi": 3, "vendredi": 4, "samedi": 5,
        "dimanche": 6,
    },
    "es": {
        "lunes": 0, "martes": 1, "miércoles": 2, "miercoles": 2, "jueves": 3, "viernes": 4,
        "sábado": 5, "sabado": 5, "domingo": 6,
    },
}  # fmt: skip

# Words that put a date in "when I am back" context; the date must follow within a short,
# same-sentence distance (see _RETURN_GAP). A date after a word saying the person is back
# ("back on", "wieder ab", "de retour le", "regreso el") beats one after a word ending the
# absence ("until", "bis", "jusqu'au", "hasta"), because OOO texts often give both.
_BACK_WORDS = re.compile(
    r"(?i)(?<![\w'’])(back|return(ing|s)?|resum(e|ing)|zurück|wieder|ab|retour|reviens"
    r"|reviendrai|rentre|reprendrai|reprise|dès|à partir du|regreso|regresaré|regresare"
    r"|vuelta|volveré|volvere|vuelvo|a partir del)(?![\w'’])"
)
_UNTIL_WORDS = re.compile(
    r"(?i)(?<![\w'’])(until|till|til|through|thru|to|bis|jusqu['’]?au|jusqu['’]?à|au|hasta"
    r"|al)(?![\w'’])"
)
_RETURN_GAP = 45


@dataclass(frozen=True)
class _DateHit:
    start: int
    month: int
    day: int
    year: int | None


def _month_alternation(languages: Iterable[str]) -> tuple[str, dict[str, int]]:
    table: dict[str, int] = {}
    for lang in languages:
        table.update(_MONTHS.get(lang, {}))
    names = sorted(table, key=len, reverse=True)
    return "|".join(re.escape(n) for n in names), table


def _year(raw: str | None) -> int | None:
    if not raw:
        return None
    value = int(raw)
    return value + 2000 if value < 100 else value


def _find_dates(text: str, languages: Sequence[str]) -> list[_DateHit]:
    alternation, months = _month_alternation(languages)
    hits: list[_DateHit] = []
    # Characters already part of a date: a lookup per character of a (short) match, not a scan
    # of every earlier match (which made a text of many dates quadratic).
    taken = bytearray(len(text))

    def add(match: re.Match[str], month: int, day: int, year: int | None) -> None:
        start, end = match.span()
        if any(taken[start:end]):
            return
        taken[start:end] = b"\x01" * (end - start)
        hits.append(_DateHit(start, month, day, year))

    for m in re.finditer(r"(?<![\d.])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d])", text):
        add(m, int(m.group(2)), int(m.group(3)), int(m.group(1)))
    month_first = bool(languages) and languages[0] == "en"
    numeric = r"(?<![\d./-])(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?![\d])"
    for m in re.finditer(numeric, text):
        a, b, year = int(m.group(1)), int(m.group(3)), _year(m.group(4))
        if m.group(2) == "/" and month_first and a <= 12:
            add(m, a, b, year)
        elif b <= 12:
            add(m, b, a, year)
        else:
            add(m, a, b, year)
    if alternation:
        day_month = (
            rf"(?i)(?<![\w.])(\d{{1,2}})(?:st|nd|rd|th|er|\.|º|°)?\s*(?:of\s+|de\s+)?"
            rf"({alternation})\.?(?![\w])(?:,?\s*(?:de\s+)?(\d{{4}}))?"
        )
        for m in re.finditer(day_month, text):
            add(m, months[m.group(2).lower()], int(m.group(1)), _year(m.group(3)))
        month_day = (
            rf"(?i)(?<![\w])({alternation})\.?\s+(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?(?![\d:])"
            rf"(?:,?\s*(\d{{4}}))?"
        )
        for m in re.finditer(month_day, text):
            add(m, months[m.group(1).lower()], int(m.group(2)), _year(m.group(3)))
    for m in re.finditer(r"(?<![\d./])(\d{1,2})\.(\d{1,2})\.(?!\d)", text):
        add(m, int(m.group(2)), int(m.group(1)), None)
    hits.sort(key=lambda h: h.start)
    return hits


def _resolve(hit: _DateHit, reference: date | None) -> date | None:
    """A concrete date: the explicit year, else the next occurrence on or after ``reference``."""
    if not (1 <= hit.month <= 12 and 1 <= hit.day <= 31):
        return None
    if hit.year is not None:
        try:
            return date(hit.year, hit.month, hit.day)
        except ValueError:
            return None
    if reference is None:
        return None
    for year in range(reference.year, reference.year + 9):  # 8 years covers any 29 February
        try:
            candidate = date(year, hit.month, hit.day)
        except ValueError:
            continue
        if candidate >= reference:
            return candidate
    return None


def _return_context(text: str, position: int) -> int:
    """2 after a "back" word, 1 after an "until" word, 0 otherwise (same sentence, close by)."""
    window = text[max(0, position - _RETURN_GAP) : position]
    window = re.split(r"[.!?;]\s|\n\s*\n", window)[-1]
    if _BACK_WORDS.search(window):
        return 2
    return 1 if _UNTIL_WORDS.search(window) else 0


def extract_return_date(
    text: str, reference: date | None, languages: Sequence[str] = LANGUAGES
) -> date | None:
    """The date an out-of-office says the person is back, or None.

    Understands day-and-month-name forms ("Monday, March 3", "3. März", "3 mars",
    "3 de marzo"), numeric forms ("03/03/2025", "03.03.2025", "2025-03-03", "3.3.") and a bare
    weekday after a return word ("back on Monday"). A date right after a return word ("back",
    "until", "bis", "jusqu'au", "de retour le", "hasta", "regreso el", ...) wins, a "back" word
    before an "until" word ("bis 6.4., ab dem 7.4. wieder da" gives 7 April); otherwise the
    latest date mentioned, since an absence is usually given as a range ending on it. Without a
    year the date is the next occurrence on or after ``reference``. ``languages`` selects the
    month and weekday names, most likely first: slashed dates are read month first
    ("04/13/2026") when that is "en" and day first ("09/03/2026" = 9 March) otherwise, falling
    back to the other order when the first cannot be a date.
    """
    languages = tuple(lang for lang in languages if lang in _MONTHS) or LANGUAGES
    hits = _find_dates(text, languages)
    candidates = [(hit, _resolve(hit, reference)) for hit in hits]
    resolved = [(hit, d) for hit, d in candidates if d is not None]
    for wanted in (2, 1):
        for hit, d in resolved:
            if _return_context(text, hit.start) == wanted:
                return d
    if resolved:
        return max(d for _, d in resolved)
    if reference is None:
        return None
    weekdays: dict[str, int] = {}
    for lang in languages:
        weekdays.update(_WEEKDAYS.get(lang, {}))
    pattern = "|".join(re.escape(w) for w in sorted(weekdays, key=len, reverse=True))
    for m in re.finditer(rf"(?i)(?<![\w])({pattern})(?![\w])", text):
        if _return_context(text, m.start()):
            ahead = (weekdays[m.group(1).lower()] - reference.weekday()) % 7 or 7
            return reference + timedelta(days=ahead)
    return None


def _guess_languages(text: str) -> tuple[str, ...]:
    """The likely language first: it decides how to read 03/04 and which words to trust."""
    words = re.findall(r"[a-zäöüßéèêàâçñáíóúü']+", text.lower())
    markers = {
        "en": {"the", "and", "i", "am", "until", "back", "will", "office", "you", "my", "on"},
        "de": {"der", "die", "und", "ich", "bin", "bis", "zum", "nicht", "ihre", "sie", "im"},
        "fr": {"le", "la", "et", "je", "suis", "jusqu'au", "vous", "de", "retour", "du", "au"},
        "es": {"el", "y", "estoy", "hasta", "de", "la", "su", "por", "regreso", "mi", "del"},
    }
    scores = {lang: sum(1 for w in words if w in vocab) for lang, vocab in markers.items()}
    ranked = sorted(LANGUAGES, key=lambda lang: (-scores[lang], LANGUAGES.index(lang)))
    return tuple(ranked)


# =============================================================================================
# Bounces and complaints
# =============================================================================================

_SYSTEM_SENDER = re.compile(
    r"(?i)(mailer-?daemon|mail-?daemon|postmaster|post_master|poostmaster|double-bounce"
    r"|mail delivery (system|subsystem)|mail deliver system|ndr administrator|nobody@"
    r"|system administrator|\bmmsc\b|mdaemon|mail ?administrator)"
)
_REPLY_PREFIX = re.compile(r"(?i)^\s*(re|aw|sv|vs|rif|antw|fw|fwd|wg|tr|rv|réf)\s*(?:\[\d+\]\s*)?:")
_BOUNCE_SUBJECT = re.compile(
    r"(?i)(undeliver|undelivered|delivery status notification|delivery (failure|failed|problem"
    r"|notification|report)|failure (notice|delivery)|failed delivery|mail delivery failed"
    r"|delivery has failed|returned mail|returned to sender|return(ed)? mail|mail system error"
    r"|could not be delivered|couldn'?t be delivered|non[- ]?deliver|delivery status"
    r"|delayed mail|delivery delayed|message delayed|warning: message .{0,200}? delayed"
    r"|bounce notification|bounced mail|error sending your mail|mail failure"
    r"|email delivery failure|errors from|nicht zustellbar|unzustellbar|non remis"
    r"|non distribuable|échec de (la )?(remise|distribution)|no se puede entregar"
    r"|no entregado|メールエラー|配信できません|не доставлено)"
)
_BOUNCE_BODY = re.compile(
    r"(?i)(could not be delivered|couldn'?t be delivered|was not delivered|not be delivered"
    r"|delivery (has )?failed|delivery to the following recipients? (failed|was delayed)"
    r"|permanent(ly)? (error|fatal|failure)|fatal errors?|user unknown|unknown user"
    r"|no such (user|mailbox|recipient)|mailbox (is )?(full|unavailable|not found|disabled)"
    r"|recipient address rejected|undeliverable|undelivered|returned mail|address(es)? failed"
    r"|host unknown|unknown host|retry timeout exceeded|delivery attempts? (will continue|failed)"
    r"|message (was|has been) (rejected|returned|bounced)|was rejected|has been rejected"
    r"|i'?m sorry to have to inform you|this is the mail system at host|qmail-send program"
    r"|delivery status notification|mail delivery (failed|subsystem|system)|invalid (user|"
    r"recipient|address)|not (a )?valid (user|recipient|mailbox)|does not exist|doesn'?t exist"
    r"|over quota|quota exceeded|temporar(y|ily) (failure|error|unavailable)"
    r"|trouble delivering|(message|mail) (was )?(rejected|refused)|requested action not taken"
    r"|hop count exceeded|could not deliver|couldn'?t deliver|unable to deliver|failure notice"
    r"|(final-recipient|diagnostic-code|original-recipient)\s*:|\b[45]\d\d[ -][45]\.\d{1,3}\.\d"
    r"|(?<![\d.])5\d\d\s+\S|your mail sent on"
    r"|nicht zugestellt|konnte nicht zugestellt|n'a pas pu être (remis|distribué)"
    r"|no (se )?pudo (ser )?entregar|не доставлено|宛先|配信)"
)
# "^\s*" under MULTILINE would run over every following blank line from each line start.
_STATUS_FIELD = re.compile(r"(?im)^[ \t]*status[ \t]*:[ \t]*([245])\.\d{1,3}\.\d{1,3}")
_ACTION_DELAYED = re.compile(r"(?im)^[ \t]*action[ \t]*:[ \t]*delayed")
_STATUS_CODE = re.compile(r"(?<![\w.])([45])\.\d{1,3}\.\d{1,3}(?![\d.])")
_SMTP_CODE = re.compile(r"(?<![\w.+:-])([45])[0-5]\d(?=[ -]\D)")
_DELAYED = re.compile(
    r"(?i)(action\s*:\s*delayed|\bdelayed\b|\bdeferred\b|still being retried|will (continue|keep)"
    r" (trying|retrying|to try)|warning: message|\(delay\))"
)
_SOFT_TEXT = re.compile(
    r"(?i)(mailbox (is )?full|over quota|quota exceeded|insufficient (system )?storage"
    r"|temporar(y|ily)|try again later|greylist|too many (connections|messages)|rate limit"
    r"|connection timed out|timed? out)"
)
_HARD_TEXT = re.compile(
    r"(?i)(user unknown|unknown user|no such (user|mailbox|recipient)|does not exist"
    r"|doesn'?t exist|invalid (recipient|address|user|mailbox)|unknown recipient|address rejected"
    r"|recipient rejected|mailbox (unavailable|not found|disabled)|account (disabled|has been"
    r" disabled|is disabled)|host unknown|unknown host|domain (not found|does not exist)"
    r"|permanent(ly)? (error|failure|fatal)|rejected|blocked|blacklisted|spam)"
)
_COMPLAINT_SUBJECT = re.compile(r"(?i)^\s*complaint about message from\b")


def _bounce_type(report: str, subject: str) -> tuple[str, str]:
    """("hard"|"soft", why): the DSN status class first, then diagnostic text, then codes.

    A report about several recipients is hard if any of them failed with a 5.x.x status: one
    permanently bad address is enough to stop mailing that contact.
    """
    classes = {m.group(1) for m in _STATUS_FIELD.finditer(report)}
    if "5" in classes:
        return "hard", "status-field"
    if "4" in classes:
        return "soft", "status-field"
    if _ACTION_DELAYED.search(report):
        return "soft", "action-delayed"
    code = _STATUS_CODE.search(report)
    if code:
        return ("hard" if code.group(1) == "5" else "soft"), "status-code"
    if _DELAYED.search(subject):
        return "soft", "delayed"
    smtp = _SMTP_CODE.search(report)
    if smtp:
        return ("hard" if smtp.group(1) == "5" else "soft"), "smtp-code"
    if _SOFT_TEXT.search(report) or _DELAYED.search(report):
        return "soft", "diagnostic-text"
    if _HARD_TEXT.search(report):
        return "hard", "diagnostic-text"
    return "hard", "default"


def _bounce(rule: str, report: str, subject: str) -> Classification:
    kind, _why = _bounce_type(report, subject)
    return Classification("bounce", rule, bounce_type=kind)


def _structural(msg: Message, headers: Mapping[str, str], subject: str) -> Classification | None:
    """Rules 1-2: reports written by mail systems (DSN, ARF and their non-standard cousins)."""
    types = {_content_type(p) for p in _walk(msg, into_attached=False)}
    report_type = ""
    if _content_type(msg) == "multipart/report":
        try:
            report_type = str(msg.get_param("report-type") or "").lower()
        except Exception:
            report_type = ""
    if report_type == "feedback-report" or "message/feedback-report" in types:
        return Classification("complaint", "arf:feedback-report")
    report = _report_text(msg)
    if (
        report_type in ("delivery-status", "global-delivery-status")
        or "message/delivery-status" in types
        or "message/global-delivery-status" in types
    ):
        return _bounce("dsn:delivery-status", report, subject)
    if _COMPLAINT_SUBJECT.search(subject) or any(
        _header(m, "X-HmXmrOriginalRecipient") for m in _attached_messages(msg)
    ):
        return Classification("complaint", "arf:hotmail-jmrp")
    if re.search(r'(?i)"notificationType"\s*:\s*"Complaint"', report):
        return Classification("complaint", "ses:complaint-notification")
    if re.search(r'(?i)"notificationType"\s*:\s*"Bounce"', report):
        ses = re.search(r'(?i)"bounceType"\s*:\s*"(\w+)"', report)
        if ses:
            kind = "soft" if ses.group(1).lower() == "transient" else "hard"
            return Classification("bounce", "ses:bounce-notification", bounce_type=kind)
        return _bounce("ses:bounce-notification", report, subject)
    if re.search(r"(?im)^feedback-type\s*:\s*\w+", report) and re.search(
        r"(?im)^user-agent\s*:", report
    ):
        return Classification("complaint", "arf:feedback-fields")
    if headers.get("x-failed-recipients"):
        return _bounce("bounce:x-failed-recipients", report, subject)
    from_text = headers.get("from", "")
    null_sender = headers.get("return-path", "").replace(" ", "") in ("<>", "")
    null_sender = null_sender and "return-path" in headers
    system_sender = bool(_SYSTEM_SENDER.search(from_text))
    reply_subject = bool(_REPLY_PREFIX.match(subject))
    subject_says = not reply_subject and bool(_BOUNCE_SUBJECT.search(subject))
    body_says = bool(_BOUNCE_BODY.search(report))
    if system_sender and (subject_says or body_says):
        return _bounce("bounce:mail-system-sender", report, subject)
    if subject_says and (body_says or _has_returned_original(msg)):
        return _bounce("bounce:subject-and-text", report, subject)
    if null_sender and _has_returned_original(msg) and not _auto_reply_header(headers):
        return _bounce("bounce:null-sender-with-original", report, subject)
    return None


# =============================================================================================
# Auto-replies
# =============================================================================================


def _auto_reply_header(headers: Mapping[str, str]) -> str | None:
    """The auto-reply header rule that fires, if any."""
    auto_submitted = headers.get("auto-submitted", "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        return "header:auto-submitted"
    for name in (
        "x-autoreply",
        "x-autorespond",
        "x-autoresponse",
        "x-autoreply-from",
        "x-mail-autoreply",
        "x-autogenerated",
        "x-auto-reply",
    ):
        value = headers.get(name, "").strip().lower()
        if name in headers and value not in ("no", "false", "0"):
            return f"header:{name}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("auto_reply", "auto-reply", "bulk", "junk"):
        return "header:precedence"
    if headers.get("x-auto-response-suppress", "").strip():
        return "header:x-auto-response-suppress"
    if "vacation" in headers.get("x-apple-action", "").lower():
        return "header:x-apple-action"
    if headers.get("x-fc-machinegenerated", "").strip().lower() == "true":
        return "header:x-fc-machinegenerated"
    if "autoresponder" in headers.get("x-post-messageclass", "").lower():
        return "header:x-post-messageclass"
    if headers.get("delivered-to", "").strip().lower() == "autoresponder":
        return "header:delivered-to-autoresponder"
    return None


_AUTO_SUBJECT_PREFIX = re.compile(
    r"(?i)^\s*(auto(matic|mated)?[ -]?(reply|response|answer)|autoreply|autoresponse"
    r"|out of (the )?office|ooo\b|away from (the )?office|on vacation|on leave|vacation reply"
    r"|abwesenheit(snotiz|smeldung)?|automatische antwort|automatische rückantwort"
    r"|nicht im büro|réponse automatique|absence|absent|message d'absence|respuesta automática"
    r"|respuesta automatica|fuera de (la )?oficina|ausente|autorespuesta)\b"
)
_AUTO_SUBJECT_ANYWHERE = re.compile(
    r"(?i)(out of (the )?office|auto(matic)?[ -]?reply|away until|away from|on vacation"
    r"|abwesenheitsnotiz|automatische antwort|réponse automatique|respuesta automática"
    r"|fuera de la oficina)"
)
_AUTO_BODY_STRONG = re.compile(
    r"(?i)(this is an? auto(matic|mated|matically generated)? (reply|response|message|e-?mail)"
    r"|(automatic|automated|auto)[- ]?(reply|response)\b[^\n]{0,200}?\b(away|absent|office|leave"
    r"|vacation)"
    r"|dies ist eine automatische (antwort|nachricht|e-?mail)"
    r"|ceci est (un|une) (réponse|message) automatique|(réponse|message) automatique"
    r"|esta es una respuesta automática|(respuesta|mensaje) automátic[oa])"
)
_AWAY = re.compile(
    r"(?i)(\b(i am|i'm|i’m|am)\s+(currently\s+|now\s+)?(out of (the )?office|away|out|on ("
    r"annual |parental |maternity |paternity |sick |holiday |business )?(leave|vacation|holiday"
    r"|travel|a business trip))|\bout of (the )?office\b|\bcurrently (away|travell?ing|on leave)"
    r"|\bich bin\b.{0,60}\b(nicht im büro|abwesend|im urlaub|nicht erreichbar|außer haus"
    r"|unterwegs)|\babwesend\b|\bim urlaub\b|\baußer haus\b"
    r"|\bje suis\b.{0,40}\b(absente?|en congés?|en vacances|hors du bureau|en déplacement)"
    r"|\babsente? du bureau\b|\ben congés?\b"
    r"|\b(estoy|me encuentro)\b.{0,40}\b(fuera de la oficina|de vacaciones|ausente|fuera|de"
    r" viaje)|\bfuera de la oficina\b|\bde vacaciones\b)"
)
_AWAY_FOLLOWUP = re.compile(
    r"(?i)(\bback\b|\breturn|\buntil\b|limited access|respond (to you )?(upon|when|after)"
    r"|reply (upon|when|after)|urgent|zurück|wieder|\bbis\b|dringend|retour|jusqu|urgen"
    r"|regres|vuelta|hasta|urgente)"
)


def _auto_reply_text(subject: str, body: str) -> str | None:
    """Rule 4: auto-reply subject and body patterns, on the reply's own text only."""
    if _AUTO_SUBJECT_PREFIX.search(subject):
        return "subject:auto-reply"
    if not _REPLY_PREFIX.match(subject) and _AUTO_SUBJECT_ANYWHERE.search(subject):
        return "subject:auto-reply"
    if _AUTO_BODY_STRONG.search(body):
        return "body:automatic-reply"
    if _AWAY.search(body) and _AWAY_FOLLOWUP.search(body):
        return "body:out-of-office"
    return None


# =============================================================================================
# Human replies
# =============================================================================================

_UNSUBSCRIBE = re.compile(
    r"(?i)(\bunsubscribe\b|\bremove me\b|\btake me off\b|\bopt(ed|ing)?[- ]out\b"
    r"|\bstop (e-?mailing|emailing|contacting|sending|messaging|writing to) (me|us)\b"
    r"|\b(do not|don'?t|never) (e-?mail|contact|message|write to) (me|us)\b"
    r"|\bno (more|further) (e-?mails|emails|messages)\b|\bremove (my|our) (e-?mail|address|data)"
    r"|\b(delete|erase) my (data|details|personal data)\b|\bplease stop\b"
    r"|\babmelden\b|\babbestellen\b|\baustragen\b|\baus (ihrem|dem) verteiler"
    r"|\bkeine (weiteren )?(e-?mails|mails|nachrichten)\b|\bnicht mehr (kontaktieren|anschreiben)"
    r"|\blöschen sie meine daten\b|désabonner|désinscri|désinscription|\bretirez[- ]moi\b"
    r"|\bne (plus )?me (plus )?(contactez|contacter|écrivez|écrire|envoyez)"
    r"|\bne plus (recevoir|être contacté)|\barrêtez de m['’](écrire|envoyer|contacter)"
    r"|\bdar(me)? de baja\b|\bbaja de (su|la|esta) lista\b|\bno me (vuelva[ns]? a )?(contacte"
    r"|escriba|envíe|envie)n?\b|\bdej(e|en|a) de (escribirme|enviarme|contactarme)"
    r"|\beliminar?(me)? de (su|la) lista\b|\bno (quiero|deseo) recibir\b)"
)
_REFERRAL_TRIGGER = re.compile(
    r"(?i)(\b(not|n['’]t)\s+the\s+(right|best|correct|appropriate)\s+(person|contact|one)"
    r"|\b(right|best|correct|appropriate) (person|contact)\b.{0,40}\b(is|would be)\b"
    r"|\b(reach out to|get in touch with|speak (to|with)|talk to|connect with"
    r"|you should (contact|email|talk to|speak with)|please (contact|email|ping)|contact)\s+"
    r"(my colleague\s+|our\s+\w+\s+)?[A-ZÄÖÜÉ]"
    r"|\b(cc['’]?(ed|d|ing)|copied|copying|looping in|looped in|loop in|forwarding (this|you)"
    r" to|forwarded (this|your email) to)\b|\bwho (handles|is responsible for|owns)\b"
    r"|\b(handles|is in charge of|is responsible for|owns) (this|that|our|these|vendor|purchas)"
    r"|nicht (der|die) richtige (ansprechpartner(in)?|person|kontakt)|\bwenden sie sich\b"
    r"|richtige ansprechpartner(in)? (ist|wäre)|\bzuständig (ist|sind|wäre)\b|\bin kopie\b"
    r"|pas la bonne personne|\bla bonne personne (est|serait)\b|\bcontactez\b|\badressez[- ]vous"
    r"|\ben copie\b|\bs['’]occupe de\b"
    r"|no soy la persona (adecuada|indicada|correcta)|\bla persona (adecuada|indicada|correcta)"
    r" (es|sería)\b|\b(contacte|contacta|contactar|escriba|escribe|hable|habla|comuníquese)"
    r" (a|con)\b|\ben copia\b|\bse encarga de\b)"
)
_WRONG_PERSON = re.compile(
    r"(?i)(\b(not|n['’]t)\s+the\s+(right|best|correct|appropriate)\s+(person|contact)"
    r"|nicht (der|die) richtige (ansprechpartner(in)?|person|kontakt)|pas la bonne personne"
    r"|no soy la persona (adecuada|indicada|correcta))"
)
_NOT_INTERESTED = re.compile(
    r"(?i)(\bnot interested\b|\bno interest\b|\bnot (really )?(a )?(good )?fit\b"
    r"|\bno,? thanks?( you)?\b|\bwe['’]?re (all )?set\b|\bwe are (all )?set\b|\bnot for us\b"
    r"|\b(we|i)['’]?ll pass\b|\b(we|i) will pass\b|\bpass on this\b|\bnot looking (for|to)\b"
    r"|\b(we|i) (don['’]?t|do not) need (it|this|that|your|any)\b|\bnot relevant\b"
    r"|\bkein(e|en)? interesse\b|\bnicht interessiert\b|\bkein bedarf\b|\bnein,? danke\b"
    r"|\bbrauchen wir nicht\b|\bpas intéressée?s?\b|\bpas d['’]intérêt\b|\baucun intérêt\b"
    r"|\bnon,? merci\b|\bpas besoin\b|\bne (sommes|suis) pas intéressée?s?\b"
    r"|\bno (me|nos) interesa\b|\bno (estoy|estamos) interesad[oa]s?\b|\bno,? gracias\b"
    r"|\bno necesitamos\b)"
)
_OBJECTION = re.compile(
    r"(?i)(\btoo (expensive|pricey|costly)\b|\b(no|don['’]?t have (a |the )?|out of|tight|limited)"
    r"\s*budget\b|\b(price|pricing|cost) (is|seems|looks) (too )?(high|steep)\b"
    r"|\b(already|currently) (use|using|have|work with|working with|signed with|invested in)\b"
    r"|\bunder contract\b|\blocked in(to)?\b|\b(bad|not the right|not a good) tim(e|ing)\b"
    r"|\bnot (a|the|our) (top )?priority\b|\bnot right now\b|\bnext (quarter|year)\b"
    r"|\bcircle back\b|\bcheck back\b|\b(security|compliance|privacy|gdpr) (concerns?|reasons)\b"
    r"|\bin[- ]house\b|\bbuilt (our|it) (own|ourselves)\b|\bnot convinced\b"
    r"|\bzu teuer\b|\bkein(e|en)? budget\b|\b(nutzen|verwenden|haben) (bereits|schon)\b"
    r"|\bkeine priorität\b|\bnächste(s|n)? (quartal|jahr)\b|\bderzeit nicht\b"
    r"|\btrop cher\b|\bpas de budget\b|\b(utilisons|avons) déjà\b|\bpas le bon moment\b"
    r"|\bpas une priorité\b|\bl['’]année prochaine\b|\bau prochain trimestre\b"
    r"|\bdemasiado caro\b|\b(sin|no tenemos) presupuesto\b|\bya (usamos|utilizamos|tenemos"
    r"|trabajamos con)\b|\bno es (el |un )?(buen )?momento\b|\bno es una prioridad\b"
    r"|\b(el )?próximo (año|trimestre)\b)"
)
_MEETING = re.compile(
    r"(?i)(\b(schedule|set up|setup|book|arrange|find|grab|hop on|jump on|have)\s+(a |some )?"
    r"(quick |short |15[- ]min(ute)? |30[- ]min(ute)? )?(call|meeting|demo|chat|time|slot)\b"
    r"|\b(let['’]?s|can we|could we|shall we|happy to|glad to|open to|like to)\s+(talk|chat|meet"
    r"|connect|speak|hop on)\b|\bcalendly\b|\b(calendar|meeting|booking) link\b|\bmy calendar\b"
    r"|\bsend (me |us |over )?(an? )?(calendar )?invite\b|\bare you (free|available)\b"
    r"|\b(free|available)\s+(on |this |next |tomorrow|monday|tuesday|wednesday|thursday|friday)"
    r"|\bhow (about|does) (monday|tuesday|wednesday|thursday|friday|tomorrow|next week)"
    r"|\b(monday|tuesday|wednesday|thursday|friday|tomorrow)\s+(at|@)\s*\d"
    r"|\btermin\b|\b(telefonat|gespräch|call|meeting|demo)\s+(vereinbaren|ausmachen|machen)"
    r"|\bam (montag|dienstag|mittwoch|donnerstag|freitag) um\b|\bpasst (es )?(ihnen|dir)\b"
    r"|\b(prendre|fixer|planifier|caler|organiser) (un |une )?(rendez-vous|rdv|appel|créneau"
    r"|call|réunion|démo)\b|\bêtes-vous disponible\b|\bdisponible (lundi|mardi|mercredi|jeudi"
    r"|vendredi|demain|la semaine prochaine)\b|\b(lundi|mardi|mercredi|jeudi|vendredi) à \d"
    r"|\b(agendar|programar|concertar|coordinar|tener) (una )?(llamada|reunión|cita|demo)\b"
    r"|\b(tienes|tiene|tienen) (tiempo|disponibilidad)\b|\bpodemos (hablar|reunirnos)\b"
    r"|\bel (lunes|martes|miércoles|jueves|viernes) a las\b)"
)
_INTERESTED = re.compile(
    r"(?i)(\b(sounds|looks|seems) (interesting|great|good|promising)\b|\binterested\b"
    r"|\btell me more\b|\blearn more\b|\bmore (info|information|details)\b"
    r"|\bsend (me |us )?(over )?(some |more )?(info|details|pricing|a deck|the deck|materials"
    r"|a proposal)\b|\bi['’]?d (like|love) to (see|know|learn|hear)\b|\bcurious\b|\bkeen\b"
    r"|\bwould love to\b|\binteressant\b|\binteressiert\b|\bmehr (erfahren|informationen)\b"
    r"|\bklingt gut\b|\bintéressante?\b|\bintéressée?s?\b|\ben savoir plus\b"
    r"|\bplus d['’]informations\b|\binteresante\b|\b(me|nos) interesa\b|\bmás información\b"
    r"|\bsuena bien\b)"
)
_QUESTION = re.compile(r"[?¿]")

# The look-behind makes a match start only where a run of address characters starts: without
# it, a long word is scanned again from each of its characters (quadratic).
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_NAME = (
    r"[A-ZÄÖÜÉÈÁÍÓÚÑ][\w'’-]+(?:\s+(?:van |von |de |del |da |le |la )?[A-ZÄÖÜÉÈÁÍÓÚÑ][\w'’-]+){0,2}"
)
_HONORIFIC = r"(?:(?i:mr|ms|mrs|dr|herr|frau|m|mme|sr|sra)\.?\s+)?"
_NAME_TAIL = r"(?:\(|<|\[|:|-|–|—|,|\bat\b|\bunter\b|\bà\b|\ben\b)?\s*"
_NAME_AFTER = re.compile(
    r"(?<![\w'’])(?i:reach out to|get in touch with|speak (?:to|with)|talk to|connect with|contact"
    r"|email|e-mail|ping|cc['’]?(?:ed|d|ing)?|copied|copying|looping in|looped in|loop in"
    r"|forwarding (?:this|you) to|forwarded (?:this|your email) to|colleague|is|would be"
    r"|wenden sie sich (?:bitte )?an|an|kontaktieren sie|contactez|adressez-vous à|à|voir avec"
    r"|contacte a|contacta a|contactar a|escriba a|hable con|habla con|comuníquese con|con|es)"
    r"(?![\w'’])"
    rf"[:,]?\s+{_HONORIFIC}(?P<name>{_NAME})"
)
_NOT_NAMES = frozenset(
    "i we our my the he she they it this that please thanks thank hi hello dear regards best "
    "you your us sales team someone somebody monday tuesday wednesday thursday friday "
    "ich wir unser bitte danke je nous notre merci bonjour yo nosotros nuestro gracias hola "
    "herr frau mr ms mrs dr and or not".split()
)


def _clean_name(raw: str | None) -> str | None:
    if not raw:
        return None
    words = raw.split()
    while words and words[-1].lower() in _NOT_NAMES:
        words.pop()
    if not words or words[0].lower() in _NOT_NAMES:
        return None
    return " ".join(words).strip(" ,.;:'’")


def _extract_referral(text: str, own_addresses: set[str]) -> dict[str, str | None] | None:
    """The person a reply points us to: {"name", "email"}; None when nobody is named."""
    email_match = None
    for m in _EMAIL.finditer(text):
        if m.group(0).lower() not in own_addresses:
            email_match = m
            break
    name = None
    if email_match is not None:
        # A name written just before the address: "Jane Doe <jane@...>", "Jane Doe (jane@...)".
        before = text[max(0, email_match.start() - 80) : email_match.start()].split("\n")[-1]
        near = re.search(rf"(?P<name>{_NAME})\s*{_NAME_TAIL}$", before)
        if near:
            inner = [m for m in _NAME_AFTER.finditer(before) if m.end() >= near.start()]
            name = _clean_name(inner[-1].group("name") if inner else near.group("name"))
    if name is None:
        for m in _NAME_AFTER.finditer(text):
            candidate = _clean_name(m.group("name"))
            if candidate:
                name = candidate
                break
    email_value = email_match.group(0) if email_match else None
    if name is None and email_value is None:
        return None
    return {"name": name, "email": email_value}


def _own_addresses(headers: Mapping[str, str]) -> set[str]:
    addresses: set[str] = set()
    for name in ("from", "reply-to", "sender", "to"):
        value = headers.get(name)
        if value:
            for _display, addr in getaddresses([value]):
                if addr:
                    addresses.add(addr.lower())
    return addresses


def _human(subject: str, text: str, headers: Mapping[str, str]) -> Classification:
    """Rule 5: the intent of a person's reply, most decisive first.

    An unsubscribe request beats everything (it is a legal obligation), a referral beats "not
    interested" (the reply usually says both), and an explicit "no" beats softer objections and
    interest words ("not interested" contains "interested").
    """
    subject_own = "" if _REPLY_PREFIX.match(subject) else subject
    if _UNSUBSCRIBE.search(text) or re.search(r"(?i)\bunsubscribe\b", subject_own):
        return Classification("unsubscribe", "text:unsubscribe")
    if _REFERRAL_TRIGGER.search(text):
        referral = _extract_referral(text, _own_addresses(headers))
        if referral is not None:
            return Classification("referral", "text:referral", referral=referral)
        if _WRONG_PERSON.search(text):
            # "I'm not the right person" without a name still tells the rep to look elsewhere.
            return Classification(
                "referral", "text:referral-unnamed", referral={"name": None, "email": None}
            )
    if _NOT_INTERESTED.search(text):
        return Classification("not_interested", "text:not-interested")
    if _MEETING.search(text):
        return Classification("meeting_request", "text:meeting-request")
    if _OBJECTION.search(text):
        return Classification("objection", "text:objection")
    if _INTERESTED.search(text):
        return Classification("interested", "text:interested")
    if _QUESTION.search(text):
        return Classification("question", "text:question")
    return Classification("other", "fallback:other")


# =============================================================================================
# Entry points
# =============================================================================================


def _headers_of(msg: Message) -> dict[str, str]:
    """Lower-cased name -> text of the first ``MAX_MAIL_HEADERS`` headers, in one pass."""
    grouped: dict[str, list[str]] = {}
    for name, value in _raw_items(msg):
        grouped.setdefault(name.lower(), []).append(_render(msg, name, value))
    return {key: " ".join(" ".join(values).split()) for key, values in grouped.items()}


def _reference_date(msg: Message, received_on: date | None) -> date | None:
    if received_on is not None:
        return received_on
    raw = _header(msg, "date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw).date()
    except (TypeError, ValueError, IndexError):
        return None


def _auto_reply(rule: str, subject: str, body: str, reference: date | None) -> Classification:
    text = f"{subject}\n{body}"
    languages = _guess_languages(text)
    return Classification(
        "auto_reply", rule, return_date=extract_return_date(text, reference, languages)
    )


def _classify(msg: Message, received_on: date | None) -> Classification:
    headers = _headers_of(msg)
    subject = headers.get("subject", "")
    found = _structural(msg, headers, subject)
    if found is not None:
        return found
    body = strip_quoted(_readable_body(msg))
    truncated_to = None
    if len(body) > MAX_CLASSIFIED_TEXT:
        # The intent is in the first lines; the rules' cost stays bounded whatever was sent.
        body, truncated_to = body[:MAX_CLASSIFIED_TEXT], MAX_CLASSIFIED_TEXT
    reference = _reference_date(msg, received_on)
    rule = _auto_reply_header(headers) or _auto_reply_text(subject, body)
    if rule is not None:
        found = _auto_reply(rule, subject, body, reference)
    else:
        found = _human(subject, body, headers)
    if truncated_to is None:
        return found
    return dataclasses.replace(found, truncated_to=truncated_to)


def classify_message(msg: Message, *, received_on: date | None = None) -> Classification:
    """Classify a parsed RFC 5322 message (the webhook's ``raw`` form).

    ``received_on`` is the reference date for return dates without a year; without it the
    message's own ``Date`` is used. Parse with :func:`parse_raw` (bounded, ``EmailMessage``);
    a compat32 ``Message`` works too.
    """
    return _classify(msg, received_on)


_STRUCTURE_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}
)


def classify_parts(
    *,
    subject: str,
    text: str,
    headers: Mapping[str, str],
    received_on: date | None = None,
) -> Classification:
    """Classify the webhook's JSON form (``subject``, ``text``, ``headers``).

    Builds an ``EmailMessage`` and runs the same rules as :func:`classify_message`, so the two
    forms of one message classify alike (except structural reports, which the JSON form cannot
    carry). MIME structure headers are ignored since ``text`` is already decoded; a header the
    email package refuses is skipped rather than failing the webhook.
    """
    msg = EmailMessage(policy=POLICY)
    for name, value in list(headers.items())[:MAX_MAIL_HEADERS]:
        if name.lower() in _STRUCTURE_HEADERS or name.lower() == "subject":
            continue
        if isinstance(value, list | tuple):
            values = [str(v) for v in value[:MAX_MAIL_HEADERS]]
        else:
            values = [str(value)]
        for item in values:
            try:
                msg[name] = " ".join(storable(item[:MAX_MAIL_HEADER_VALUE]).split())
            except (ValueError, TypeError, IndexError):
                continue
    try:
        msg["Subject"] = " ".join(storable(subject[:MAX_MAIL_HEADER_VALUE]).split())
    except (ValueError, TypeError):
        pass
    msg.set_content(storable((text or "")[:MAX_DECODED_TEXT]))
    return _classify(msg, received_on)
