"""When the demo says no: too many links from one client, a full demo, a closed one, no demo at all."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import RequestFactory

from accounts.demo import links, membership
from accounts.models import DemoMember, DemoSignup, User
from audit.models import AuditEvent
from tests.conftest import require
from tests.support.demo_support import ask_for_link, link_in

pytestmark = pytest.mark.django_db


def join_by_mail(client, email: str, mailoutbox) -> None:
    ask_for_link(client, email, address="192.0.2.99")
    assert client.post(link_in(mailoutbox[-1])).status_code == 302
    client.logout()


# --- throttling -------------------------------------------------------------------------------


def test_it_refuses_the_n_plus_first_link_from_one_address(client, seeded_demo, mailoutbox):
    for n in range(3):
        assert ask_for_link(client, f"p{n}@example.org", address="203.0.113.7").status_code == 302

    refused = ask_for_link(client, "p3@example.org", address="203.0.113.7")

    assert refused.status_code == 429
    page = refused.content.decode()
    assert "Too many links were asked for" in page
    assert "Wait 60 minutes" in page
    assert 3500 < int(refused["Retry-After"]) <= 3600
    assert len(mailoutbox) == 3
    assert not DemoSignup.objects.filter(email="p3@example.org").exists()
    assert AuditEvent.objects.filter(action="demo.link_refused", reason="throttled").count() == 1
    # Another client is not held back by this one.
    assert ask_for_link(client, "p3@example.org", address="203.0.113.8").status_code == 302


def test_it_counts_an_ipv6_client_by_its_64(client, seeded_demo):
    for n in range(3):
        ask_for_link(client, f"v{n}@example.org", address=f"2001:db8:1:2::{n + 1}")
    assert ask_for_link(client, "v9@example.org", address="2001:db8:1:2:ffff::9").status_code == 429
    assert ask_for_link(client, "v9@example.org", address="2001:db8:1:3::1").status_code == 302


def test_it_limits_links_to_one_mailbox_from_many_clients(client, seeded_demo, mailoutbox):
    for n in range(3):
        ask_for_link(client, "target@example.org", address=f"198.51.100.{n + 1}")
    assert ask_for_link(client, "target@example.org", address="198.51.100.50").status_code == 429
    assert len(mailoutbox) == 3


@pytest.mark.postgres
def test_racing_requests_cannot_slip_under_the_throttle(transactional_db, seeded_demo, demo_settings):
    # SQLite's in-memory test database answers concurrent threads with "table is locked".
    require(connection.vendor == "postgresql", "row locks between threads need PostgreSQL (DATABASE_URL)")
    demo_settings.CLUSTERRA_DEMO_SIGNUPS_PER_HOUR = 2
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def ask(n: int) -> None:
        request = RequestFactory().post("/demo/", REMOTE_ADDR="203.0.113.77")
        try:
            barrier.wait()
            links.request_link(f"race{n}@example.org", request)
            outcomes.append("sent")
        except links.Throttled:
            outcomes.append("throttled")
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["sent"] * 2 + ["throttled"] * 4
    assert DemoSignup.objects.filter(client="203.0.113.77").count() == 2


# --- full -------------------------------------------------------------------------------------


def test_a_full_demo_says_so_and_makes_no_account(client, seeded_demo, demo_settings, mailoutbox):
    demo_settings.CLUSTERRA_DEMO_MAX_PEOPLE = 1
    join_by_mail(client, "first@example.org", mailoutbox)

    page = client.get("/demo/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "The demo is full" in text
    assert "All 1 places are taken" in text
    assert "Already in the demo?" in text

    # The form still mails a link (it never says who has an account); the link says the demo is full.
    ask_for_link(client, "second@example.org")
    refused = client.post(link_in(mailoutbox[-1]))
    assert refused.status_code == 503
    assert "The demo is full" in refused.content.decode()
    assert not User.objects.filter(email="second@example.org").exists()
    assert DemoSignup.objects.get(email="second@example.org").used_at is None
    assert AuditEvent.objects.filter(action="demo.link_refused", reason="full").exists()


def test_a_demo_person_still_signs_in_while_the_demo_is_full(client, seeded_demo, demo_settings, mailoutbox):
    demo_settings.CLUSTERRA_DEMO_MAX_PEOPLE = 1
    join_by_mail(client, "first@example.org", mailoutbox)
    ask_for_link(client, "first@example.org")
    assert client.post(link_in(mailoutbox[-1])).status_code == 302


def test_a_place_frees_up_when_a_demo_person_is_deactivated(client, seeded_demo, demo_settings, mailoutbox):
    demo_settings.CLUSTERRA_DEMO_MAX_PEOPLE = 1
    join_by_mail(client, "first@example.org", mailoutbox)
    User.objects.filter(email="first@example.org").update(is_active=False)
    assert membership.status().state == "open"


# --- closed -----------------------------------------------------------------------------------


def test_a_closed_demo_says_so_and_makes_no_account(client, seeded_demo, demo_settings, mailoutbox):
    demo_settings.CLUSTERRA_DEMO_OPEN = False

    page = client.get("/demo/").content.decode()
    assert "The demo is closed to new people" in page

    ask_for_link(client, "late@example.org")
    refused = client.post(link_in(mailoutbox[-1]))
    assert refused.status_code == 503
    assert "The demo is closed to new people" in refused.content.decode()
    assert not User.objects.filter(email="late@example.org").exists()


def test_a_console_without_a_demo_cluster_has_no_demo(client, seeded_demo, demo_settings, mailoutbox):
    demo_settings.CLUSTERRA_DEMO_CLUSTER = ""

    page = client.get("/demo/")
    assert page.status_code == 404
    assert "This console has no demo" in page.content.decode()
    posted = ask_for_link(client, "someone@example.org")
    assert posted.status_code == 404
    assert mailoutbox == []
    assert not DemoSignup.objects.exists()


def test_a_demo_that_was_never_seeded_is_not_ready(client, signup_cluster, mailoutbox):
    page = client.get("/demo/").content.decode()
    assert "The demo is not ready yet" in page
    ask_for_link(client, "early@example.org")
    refused = client.post(link_in(mailoutbox[-1]))
    assert refused.status_code == 503
    assert "manage.py seed_demo" in refused.content.decode()
    assert not DemoMember.objects.exists()
