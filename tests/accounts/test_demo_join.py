"""Joining the demo with one click, for a person already signed in (through the IdP, typically)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from access import policy
from access.models import Quota
from access.policy import Resources
from accounts.demo import membership
from accounts.models import DemoMember, User
from audit.models import AuditEvent
from tests.support.fixtures_idp import sign_in

pytestmark = pytest.mark.django_db


def test_a_signed_in_person_sees_the_join_button(client, seeded_demo, jane):
    client.force_login(jane)
    page = client.get("/demo/").content.decode()
    assert 'action="/demo/join/"' in page
    assert "Join the demo" in page
    assert 'type="email"' not in page


def test_one_click_puts_them_in_the_demo(client, seeded_demo, jane):
    client.force_login(jane)

    answer = client.post("/demo/join/")

    assert answer.status_code == 302
    assert answer["Location"] == "/"
    member = DemoMember.objects.get(user=jane)
    assert member.via == "account"
    assert jane.groups.filter(name="demo").exists()
    assert Quota.objects.get(cluster=seeded_demo, user=jane).max_running_jobs == 2
    assert policy.decide(jane, "job.submit", seeded_demo, Resources(partition="debug", time_limit=10)).allowed
    assert AuditEvent.objects.get(action="demo.joined").reason == "account"
    # A second click changes nothing.
    assert client.post("/demo/join/").status_code == 302
    assert DemoMember.objects.count() == 1
    assert "You are in the demo" in client.get("/demo/").content.decode()


def test_joining_needs_a_signed_in_person_and_a_post(client, seeded_demo, jane):
    assert client.post("/demo/join/").status_code == 302
    assert not DemoMember.objects.exists()
    client.force_login(jane)
    assert client.get("/demo/join/").status_code == 405


def test_it_refuses_to_join_a_full_demo(client, seeded_demo, demo_settings, jane):
    demo_settings.CLUSTERRA_DEMO_MAX_PEOPLE = 0
    client.force_login(jane)
    assert "The demo is full" in client.get("/demo/").content.decode()

    answer = client.post("/demo/join/")

    assert answer.status_code == 503
    assert "The demo is full" in answer.content.decode()
    assert not DemoMember.objects.exists()
    assert not jane.groups.exists()
    assert AuditEvent.objects.filter(action="demo.join_refused", reason="full").exists()


def test_each_person_has_one_demo_period(client, seeded_demo, jane):
    DemoMember.objects.create(user=jane, via="account", expires=timezone.now(), ended=timezone.now())
    client.force_login(jane)
    assert "Your demo time is over" in client.get("/demo/").content.decode()
    answer = client.post("/demo/join/")
    assert answer.status_code == 403
    assert "Your demo time is over" in answer.content.decode()
    assert not jane.groups.exists()


@pytest.mark.idp
def test_a_person_from_the_idp_joins_with_one_click(client, idp, seeded_demo):
    start = client.get("/demo/").content.decode()
    assert "Sign in with Test IdP" in start
    assert "/accounts/oidc/testidp/login/?next=%2Fdemo%2F" in start

    signed_in = sign_in(client, "bob", "bob-pw")
    assert signed_in.console.status_code == 302
    bob = User.objects.get(email="bob@example.org")
    page = client.get("/demo/").content.decode()
    assert "Join the demo" in page

    assert client.post("/demo/join/")["Location"] == "/"
    assert membership.membership(bob).via == "account"
    assert bob.groups.filter(name="demo").exists()
    # IdP group sync at the next sign-in leaves the plain console group alone.
    client.logout()
    sign_in(client, "bob", "bob-pw")
    assert bob.groups.filter(name="demo").exists()
