"""Campaign email pieces: strict templates with fallbacks, the MIME message, tokens, SMTP phases."""

from __future__ import annotations

import datetime as dt
import email
import socket
import threading
from email import policy
from pathlib import Path

import pytest

from db.campaigns import company_key, merge_contacts
from dealflow.ids import message_id_for
from domain.campaign_email import (
    EmailLayout,
    MissingField,
    TemplateSyntaxProblem,
    build_message,
    check_step_templates,
    compile_template,
    contact_context,
    read_unsubscribe_token,
    render_step,
    text_to_html,
    unsubscribe_token,
)
from integrations.smtp import SmtpAmbiguous, SmtpMailer, SmtpRejected, SmtpTransient

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SENDER = {"name": "Maya Chen", "email": "maya@dealflow.example"}


def _ctx(**contact):
    return contact_context({"email": "ada@acme.example", **contact}, {}, SENDER)


def test_a_missing_field_names_the_field_and_the_place():
    step = {"subject": "Hi {{ first_name }}", "body": "About {{ company }}."}
    with pytest.raises(MissingField) as err:
        render_step(step, 1, None, _ctx(first_name="Ada"))
    assert err.value.field == "company"
    assert err.value.where == "step 2 body"
    assert "no fallback" in str(err.value)


def test_fallbacks_and_template_defaults_fill_gaps_and_empty_values_count_as_missing():
    step = {"subject": "Hi {{ first_name }}", "body": "{{ company }} / {{ nick | default('you') }}"}
    ctx = contact_context(
        {"email": "ada@acme.example", "first_name": "", "company": "Acme"},
        {"first_name": "there"},
        SENDER,
    )
    out = render_step(step, 0, None, ctx)
    assert out.subject == "Hi there" and out.text == "Acme / you"


def test_custom_fields_and_variants_render():
    step = {
        "variants": [
            {"name": "A", "subject": "A {{ plan }}", "body": "a"},
            {"name": "B", "subject": "B {{ fields.plan }}", "body": "b"},
        ]
    }
    ctx = _ctx(fields={"plan": "pro"})
    assert render_step(step, 0, "A", ctx).subject == "A pro"
    assert render_step(step, 0, "B", ctx).subject == "B pro"


def test_templates_are_sandboxed_and_syntax_errors_are_refused():
    with pytest.raises(TemplateSyntaxProblem):
        check_step_templates({"body": "{% for x in %}"})
    unsafe = {"body": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
    with pytest.raises((TemplateSyntaxProblem, MissingField)):
        render_step(unsafe, 0, None, _ctx())
    assert compile_template("x") is compile_template("x")  # compiled once


def test_html_part_escapes_the_text():
    assert text_to_html("Hi <b>you</b>\nline 2\n\nnext") == (
        "<p>Hi &lt;b&gt;you&lt;/b&gt;<br>\nline 2</p>\n<p>next</p>"
    )


def test_message_ids_are_stable_per_contact_and_step_and_case_insensitive():
    a = message_id_for("cmp_1", "Ada@Acme.example", 0, "maya@dealflow.example")
    assert a == message_id_for("cmp_1", "ada@acme.example ", 0, "maya@dealflow.example")
    assert a != message_id_for("cmp_1", "ada@acme.example", 1, "maya@dealflow.example")
    assert a.endswith("@dealflow.example") and "<" not in a


def test_the_message_has_threading_one_click_unsubscribe_and_the_footer():
    layout = EmailLayout(TEMPLATES)
    text, html = layout.render(
        body_text="Hello <Ada>",
        context={
            "subject": "s",
            "sender_name": "Maya Chen",
            "postal_address": "1 Main St, Springfield",
            "unsubscribe_url": "https://x.example/v1/unsubscribe/tok",
        },
    )
    msg = build_message(
        sender_name="Maya Chen",
        sender_email="maya@dealflow.example",
        to_email="ada@acme.example",
        to_name="Ada Lovelace",
        subject="Re: Quick question",
        text=text,
        html_body=html,
        message_id="m2@dealflow.example",
        references=["m0@dealflow.example", "m1@dealflow.example"],
        unsubscribe_url="https://x.example/v1/unsubscribe/tok",
        unsubscribe_mailto="mailto:maya@dealflow.example?subject=unsubscribe%20tok",
        date=dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC),
        campaign_id="cmp_1",
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == "<m2@dealflow.example>"
    assert parsed["In-Reply-To"] == "<m1@dealflow.example>"
    assert parsed["References"] == "<m0@dealflow.example> <m1@dealflow.example>"
    assert parsed["List-Unsubscribe"] == (
        "<https://x.example/v1/unsubscribe/tok>, "
        "<mailto:maya@dealflow.example?subject=unsubscribe%20tok>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain = parsed.get_body(("plain",)).get_content()
    rich = parsed.get_body(("html",)).get_content()
    assert "Hello <Ada>" in plain and "1 Main St, Springfield" in plain
    assert "Hello &lt;Ada&gt;" in rich and 'href="https://x.example/v1/unsubscribe/tok"' in rich


def test_unsubscribe_tokens_round_trip_and_refuse_tampering():
    token = unsubscribe_token(
        "k", campaign_id="cmp_1", sender_email="Maya@dealflow.example", contact_email="A@b.example"
    )
    req = read_unsubscribe_token("k", token)
    assert (req.campaign_id, req.sender_email, req.contact_email) == (
        "cmp_1",
        "maya@dealflow.example",
        "a@b.example",
    )
    assert read_unsubscribe_token("other key", token) is None
    payload, mac = token.split(".")
    assert read_unsubscribe_token("k", payload[:-2] + "xx." + mac) is None
    assert read_unsubscribe_token("k", "garbage") is None


def test_duplicates_merge_first_wins_and_gaps_fill():
    merged, dups = merge_contacts(
        [
            {"email": "Ada@Acme.example", "first_name": "Ada", "title": None, "fields": {"a": 1}},
            {
                "email": "ada@acme.example ",
                "first_name": "X",
                "title": "CTO",
                "fields": {"a": 2, "b": 3},
            },
            {"email": "bob@acme.example"},
        ]
    )
    assert [m["email"] for m in merged] == ["ada@acme.example", "bob@acme.example"]
    assert merged[0]["first_name"] == "Ada" and merged[0]["title"] == "CTO"
    assert merged[0]["fields"] == {"a": 1, "b": 3}
    assert dups == [{"email": "ada@acme.example", "occurrences": 2}]
    assert company_key(" Acme  Corp ", "x@acme.example") == "acme corp"
    assert company_key(None, "x@Acme.example") == "acme.example"


# --- SMTP: where a failure happens decides whether a retry may send ----------------------------


class _FakeSmtp:
    """A tiny scripted SMTP server: answers each command from a script, or hangs up."""

    def __init__(self, script: dict[str, str | None]) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        f = conn.makefile("rb")
        conn.sendall(b"220 fake\r\n")
        in_data = False
        for raw in f:
            line = raw.decode().strip()
            if in_data:
                if line == ".":
                    in_data = False
                    answer = self.script.get("END", "250 ok")
                    if answer is None:
                        conn.close()
                        return
                    conn.sendall(answer.encode() + b"\r\n")
                continue
            verb = line.split(" ")[0].split(":")[0].upper()
            answer = self.script.get(
                verb, {"EHLO": "250 fake", "QUIT": "221 bye"}.get(verb, "250 ok")
            )
            if answer is None:
                conn.close()
                return
            conn.sendall(answer.encode() + b"\r\n")
            if verb == "DATA" and answer.startswith("354"):
                in_data = True
            if verb == "QUIT":
                conn.close()
                return


def _send(script, before_data=None):
    server = _FakeSmtp({"DATA": "354 go", **script})
    msg = build_message(
        sender_name="M",
        sender_email="m@dealflow.example",
        to_email="a@b.example",
        to_name=None,
        subject="s",
        text="t",
        html_body="<p>t</p>",
        message_id="x@dealflow.example",
        references=[],
        unsubscribe_url="https://u",
        unsubscribe_mailto="mailto:m@dealflow.example",
        date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        campaign_id="c",
    )
    SmtpMailer("127.0.0.1", server.port, timeout=5).send(
        msg, mail_from="m@dealflow.example", rcpt="a@b.example", before_data=before_data
    )


def test_smtp_failures_are_placed_before_or_after_the_hand_over():
    calls = []
    _send({}, before_data=lambda: calls.append("before DATA"))
    assert calls == ["before DATA"]
    with pytest.raises(SmtpRejected):
        _send({"RCPT": "550 no such user"})
    with pytest.raises(SmtpTransient):
        _send({"RCPT": "451 try later"})
    with pytest.raises(SmtpTransient):
        _send({"MAIL": None})  # hung up before anything was handed over
    with pytest.raises(SmtpTransient):
        _send({"END": "451 try later"})  # refused the content explicitly: safe to retry
    with pytest.raises(SmtpAmbiguous):
        _send({"END": None})  # hung up after the content: it may have been kept
    with pytest.raises(SmtpTransient):
        SmtpMailer("127.0.0.1", 1, timeout=1).send(
            email.message.EmailMessage(), mail_from="m@x.example", rcpt="a@b.example"
        )
