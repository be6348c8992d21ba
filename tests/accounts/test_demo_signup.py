"""The demo signup at /demo/: address → mailed link → signed in, in the demo, with its grant and quota."""

from __future__ import annotations

from unittest import mock

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth.models import Group
from django.core import signing

from access import policy
from access.demo import PERSON_QUOTA_NOTE
from access.models import Grant, Quota
from access.policy import Resources
from accounts.demo import links
from accounts.models import DemoMember, DemoSignup, PosixAccount, User
from audit.models import AuditEvent
from tests.support.demo_support import ask_for_link, link_in

pytestmark = pytest.mark.django_db


def signed_in_as(client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def test_a_newcomer_signs_up_by_mail_and_lands_on_the_dashboard(client, seeded_demo, mailoutbox):
    asked = ask_for_link(client, "Ada.Lovelace@Example.org")
    assert asked.status_code == 302
    assert asked["Location"] == "/demo/sent/"
    assert "ada.lovelace@example.org" in client.get("/demo/sent/").content.decode()
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["ada.lovelace@example.org"]
    path = link_in(mailoutbox[0])

    # Opening the link only shows a button: mail scanners open links too.
    page = client.get(path)
    assert page.status_code == 200
    assert "Join the demo" in page.content.decode()
    assert not User.objects.filter(email="ada.lovelace@example.org").exists()

    joined = client.post(path)
    assert joined.status_code == 302
    assert joined["Location"] == "/"
    person = signed_in_as(client)
    assert person is not None
    assert person.email == "ada.lovelace@example.org"
    assert person.is_active
    assert not person.has_usable_password()
    assert person.groups.filter(name="demo").exists()
    member = DemoMember.objects.get(user=person)
    assert member.via == "email"
    assert member.cluster == seeded_demo
    assert 6.9 < (member.expires - member.joined).total_seconds() / 86400 <= 7
    assert PosixAccount.objects.get(user=person).username == "ada_lovelace"

    group = Group.objects.get(name="demo")
    grant = Grant.objects.get(cluster=seeded_demo, group=group)
    assert (grant.partition_names, grant.terminal, grant.all_partitions) == (["debug"], True, False)
    assert Quota.objects.get(cluster=seeded_demo, group=group).max_walltime == 10
    own = Quota.objects.get(cluster=seeded_demo, user=person)
    assert (own.max_running_jobs, own.max_walltime, own.cpu_hours, own.period) == (2, 10, 1.0, "day")
    assert own.note == PERSON_QUOTA_NOTE

    allowed = policy.decide(
        person, "job.submit", seeded_demo, Resources(partition="debug", time_limit=10, cpus=1)
    )
    assert allowed.allowed, allowed.message
    denied = policy.decide(
        person, "job.submit", seeded_demo, Resources(partition="cpu", time_limit=10, cpus=1)
    )
    assert not denied.allowed
    assert denied.code == "partition_not_granted"
    assert denied.message == "You may not submit to partition cpu on Demo cluster; your access allows debug."
    assert policy.decide(person, "terminal.open", seeded_demo).allowed
    too_long = policy.decide(person, "job.submit", seeded_demo, Resources(partition="debug", time_limit=11))
    assert too_long.code == "max_walltime"

    actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    for step in ("demo.link_sent", "demo.joined", "auth.login"):
        assert step in actions
    assert AuditEvent.objects.get(action="auth.login").details["method"] == "demo_link"


def test_the_dashboard_welcomes_the_new_person(client, seeded_demo, mailoutbox):
    ask_for_link(client, "grace@example.org")
    dashboard = client.post(link_in(mailoutbox[0]), follow=True)
    assert dashboard.status_code == 200
    assert "Welcome to the demo" in dashboard.content.decode()
    assert "You are in the demo" in client.get("/demo/").content.decode()


def test_a_replayed_link_is_refused_and_changes_nothing(client, seeded_demo, mailoutbox):
    ask_for_link(client, "grace@example.org")
    path = link_in(mailoutbox[0])
    assert client.post(path).status_code == 302
    client.logout()

    again = client.post(path)
    assert again.status_code == 410
    assert "This link has already been used" in again.content.decode()
    assert signed_in_as(client) is None
    assert User.objects.filter(email="grace@example.org").count() == 1
    assert client.get(path).status_code == 410
    assert AuditEvent.objects.filter(action="demo.link_refused", reason="used").exists()


def test_an_expired_link_is_refused_and_changes_nothing(client, seeded_demo, mailoutbox):
    ask_for_link(client, "old@example.org")
    signup = DemoSignup.objects.get(email="old@example.org")
    # The same link, signed 61 minutes ago.
    with mock.patch("django.core.signing.time.time", return_value=signup.created.timestamp() - 61 * 60):
        token = signing.dumps(signup.pk, salt=links.SALT)

    refused = client.post(f"/demo/link/{token}/")
    assert refused.status_code == 410
    assert "This link has expired" in refused.content.decode()
    assert "60 minutes" in refused.content.decode()
    assert not User.objects.filter(email="old@example.org").exists()
    assert DemoSignup.objects.get(pk=signup.pk).used_at is None


def test_a_tampered_link_is_refused(client, seeded_demo, mailoutbox):
    ask_for_link(client, "eve@example.org")
    path = link_in(mailoutbox[0])
    forged = path.replace("/demo/link/", "/demo/link/x")
    answer = client.post(forged)
    assert answer.status_code == 400
    assert "This link is not valid" in answer.content.decode()
    assert not User.objects.filter(email="eve@example.org").exists()


def test_a_malformed_address_gets_the_form_back_and_changes_nothing(client, seeded_demo, mailoutbox):
    answer = ask_for_link(client, "not an address")
    assert answer.status_code == 400
    assert "Enter a valid email address" in answer.content.decode()
    assert mailoutbox == []
    assert not DemoSignup.objects.exists()
    assert AuditEvent.objects.filter(action="demo.link_refused", reason="bad_address").exists()


def test_a_demo_person_signs_in_again_with_a_new_link(client, seeded_demo, mailoutbox):
    ask_for_link(client, "lin@example.org")
    client.post(link_in(mailoutbox[0]))
    client.logout()

    ask_for_link(client, "LIN@example.org")
    page = client.get(link_in(mailoutbox[1])).content.decode()
    assert "Sign in to the demo" in page
    assert client.post(link_in(mailoutbox[1])).status_code == 302
    assert signed_in_as(client).email == "lin@example.org"
    assert User.objects.filter(email__iexact="lin@example.org").count() == 1
    assert DemoMember.objects.count() == 1


def test_opening_a_link_spends_older_ones_for_the_same_address(client, seeded_demo, mailoutbox):
    ask_for_link(client, "two@example.org")
    ask_for_link(client, "two@example.org")
    assert client.post(link_in(mailoutbox[1])).status_code == 302
    client.logout()
    assert client.post(link_in(mailoutbox[0])).status_code == 410


def test_a_deactivated_person_gets_a_clear_page_and_stays_deactivated(client, seeded_demo, mailoutbox):
    ask_for_link(client, "gone@example.org")
    client.post(link_in(mailoutbox[0]))
    client.logout()
    person = User.objects.get(email="gone@example.org")
    person.is_active = False
    person.save()

    ask_for_link(client, "gone@example.org")
    answer = client.post(link_in(mailoutbox[1]))
    assert answer.status_code == 403
    assert "This demo account has ended" in answer.content.decode()
    person.refresh_from_db()
    assert not person.is_active
    assert signed_in_as(client) is None
    assert DemoSignup.objects.filter(used_at__isnull=True).count() == 1


def test_a_link_never_signs_in_an_account_the_demo_did_not_make(client, seeded_demo, mailoutbox):
    staff = User.objects.create_user("boss", "boss@example.org", "pw-boss-123456", is_staff=True)
    asked = ask_for_link(client, "boss@example.org")
    # The form answers the same for every address: who has an account is not its to say.
    assert asked["Location"] == "/demo/sent/"
    answer = client.post(link_in(mailoutbox[0]))
    assert answer.status_code == 403
    assert "belongs to an account with its own sign-in" in answer.content.decode()
    assert signed_in_as(client) is None
    assert not DemoMember.objects.filter(user=staff).exists()


def test_an_address_another_account_holds_at_the_idp_counts_as_theirs(client, seeded_demo, mailoutbox):
    bob = User.objects.create(username="bob", email="bob@corp.example")
    EmailAddress.objects.create(user=bob, email="bob@home.example", verified=True, primary=False)
    ask_for_link(client, "bob@home.example")
    assert client.post(link_in(mailoutbox[0])).status_code == 403
    assert User.objects.count() == 1


def test_the_sign_in_page_points_newcomers_at_the_demo(client, seeded_demo):
    page = client.get("/accounts/login/").content.decode()

    assert 'href="/demo/"' in page
    assert "Try the demo</a> on\n      Demo cluster" in page


def test_the_sign_in_page_offers_no_demo_where_none_runs(client, demo_settings):
    demo_settings.CLUSTERRA_DEMO_CLUSTER = ""

    assert 'href="/demo/"' not in client.get("/accounts/login/").content.decode()
