"""The demo's "check your mail" page says where the link really went: a mailbox, or the server's log."""

from __future__ import annotations

import pytest

from tests.support.demo_support import LINK, ask_for_link

pytestmark = pytest.mark.django_db

PRINTED = "django.core.mail.backends.console.EmailBackend"


def test_without_a_mail_server_the_page_says_the_link_is_in_the_log(client, seeded_demo, settings, capsys):
    # What settings.py chooses when CLUSTERRA_EMAIL_HOST is unset.
    settings.EMAIL_BACKEND = PRINTED

    asked = ask_for_link(client, "ada@example.org")
    page = client.get(asked["Location"]).content.decode()

    assert "<h1>Your link is in the console's log</h1>" in page
    assert "no mail server is set up" in page
    assert "ada@example.org" in page
    assert "spam" not in page
    assert LINK.search(capsys.readouterr().out), "the page says the link is in the log: it must be there"


def test_with_a_mail_server_the_page_sends_you_to_your_mailbox(client, seeded_demo, mailoutbox):
    asked = ask_for_link(client, "ada@example.org")
    page = client.get(asked["Location"]).content.decode()

    assert len(mailoutbox) == 1
    assert "<h1>Check your mail</h1>" in page
    assert "Look in the spam folder" in page
    assert "server log" not in page
