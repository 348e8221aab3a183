"""Campaign rules with no I/O: how a classified reply routes a sequence, when an out-of-office
resumes it, and where a deferred send's slot falls in the contact's window.

Pure functions of their arguments (the workflows call them, so they must be deterministic);
the message types they feed live in ``messages/campaign.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.schedule import SendWindow, local_instant, next_send_time

# Business hours used to find "the next business day" after an out-of-office's return date.
BUSINESS_DAY = SendWindow(start=time(9), end=time(17))


@dataclass(frozen=True)
class ReplyRoute:
    """What a classified reply does to the sequence, and what else happens."""

    action: str  # "stop" | "pause"
    outcome: str | None  # the contact's outcome word (counts)
    suppress: str | None = None  # suppression reason, when the address must never be mailed
    suppress_all_senders: bool = False
    notify: bool = False  # tell the rep in Slack, with the thread
    task: bool = False  # create a follow-up task for the rep
    referral: bool = False  # record the referred person


REPLY_ROUTES: dict[str, ReplyRoute] = {
    "auto_reply": ReplyRoute("pause", None),
    "bounce": ReplyRoute("stop", "bounced"),
    "complaint": ReplyRoute("stop", "complained", "complaint", suppress_all_senders=True),
    "unsubscribe": ReplyRoute("stop", "unsubscribed", "unsubscribed"),
    "interested": ReplyRoute("stop", "interested", notify=True, task=True),
    "meeting_request": ReplyRoute("stop", "meeting_request", notify=True, task=True),
    "not_interested": ReplyRoute("stop", "not_interested"),
    "referral": ReplyRoute("stop", "referral", referral=True),
    "question": ReplyRoute("stop", "question", notify=True, task=True),
    "objection": ReplyRoute("stop", "objection", notify=True, task=True),
    # A person wrote back and we cannot tell what they want: a person should read it.
    "other": ReplyRoute("stop", "replied", notify=True, task=True),
}
# An interested or meeting reply is one call from a deal: the rep's message says how to make it.
ONE_CALL_AWAY = frozenset({"interested", "meeting_request"})


def reply_route(kind: str, bounce_type: str | None = None) -> ReplyRoute:
    """The route for a classification; hard bounces are also suppressed for every sender."""
    route = REPLY_ROUTES.get(kind, REPLY_ROUTES["other"])
    if kind == "bounce" and (bounce_type or "hard") == "hard":
        return ReplyRoute("stop", "bounced", "hard_bounce", suppress_all_senders=True)
    return route


def auto_reply_resume_at(
    return_date: date | None,
    received_at: datetime,
    tz: str,
    country: str | None,
    *,
    default_days: int,
    max_days: int,
) -> datetime:
    """When a sequence paused by an out-of-office resumes.

    The opening of the first business day after the return date in the contact's zone (they
    need a day to dig out), never later than ``max_days`` after the reply, and ``default_days``
    after it when the auto-reply gave no date. A return date already past resumes at once.
    """
    latest = received_at + timedelta(days=max_days)
    if return_date is None:
        resume = received_at + timedelta(days=default_days)
    else:
        try:
            start = local_instant(return_date, time(0), tz)
            resume = next_send_time(start, 1, BUSINESS_DAY, tz, country)
        except (ValueError, KeyError):
            resume = received_at + timedelta(days=default_days)
    return max(received_at, min(resume, latest))


def reply_notification(
    *,
    kind: str,
    who: str,
    contact_email: str,
    campaign_id: str,
    campaign_name: str,
    rule: str,
    reply_text: str | None,
    reply_subject: str | None,
    received_at: datetime,
    sent: list[tuple[int, str | None, datetime]],
    task_id: str | None,
    base_url: str,
) -> str:
    """The rep's Slack message about a reply: the reply quoted, the thread it answers (``sent``:
    step index, subject, sent at), where to see the contact, and the deal link when the reply
    is one call away from a deal."""
    thread = "\n".join(
        f"• step {step + 1}: “{subject}” sent {at:%Y-%m-%d %H:%M} UTC" for step, subject, at in sent
    )
    quoted = "\n".join(f"> {line}" for line in (reply_text or "").splitlines()[:12])
    return (
        f"*{kind.replace('_', ' ').capitalize()}* reply from {who} "
        f"<{contact_email}> to “{campaign_name}” (rule `{rule}`)\n"
        f"{quoted}\n"
        f"Thread:\n{thread}\n"
        f"• reply “{reply_subject or ''}” received "
        f"{received_at:%Y-%m-%d %H:%M} UTC\n"
        f"Sequence stopped. {base_url}/v1/campaigns/"
        f"{campaign_id}/contacts/{contact_email}"
        + (f"\nA follow-up task was created ({task_id})." if task_id else "")
        + (
            "\n*One call away from a deal:* `POST "
            f"{base_url}/v1/campaigns/{campaign_id}/contacts/"
            f"{contact_email}/deal` makes a draft deal with them as the signer."
            if kind in ONE_CALL_AWAY
            else ""
        )
    )


# --- send-window maths of the send's claim ------------------------------------------------------


def known_zone(name: str) -> ZoneInfo | None:
    """The zone of an IANA name, or None when the name is unknown (the preflight excludes it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def sender_zone(name: str) -> tzinfo:
    """The zone a sender's daily cap is counted in (UTC when the name is unknown)."""
    return known_zone(name) or UTC


def opening_on(
    now: datetime, day: date, window: SendWindow, tz: str, country: str | None, zone: tzinfo
) -> datetime:
    """The first opening of the contact's ``window`` (zone ``tz``) from ``now`` that falls on
    the sender's ``day`` (in the sender's ``zone``) or later: a reserved send's slot."""
    candidate = next_send_time(now, 0, window, tz, country)
    for _ in range(3 * 366):
        if candidate.astimezone(zone).date() >= day:
            return candidate
        candidate = next_send_time(candidate, 1, window, tz, country)
    return candidate
