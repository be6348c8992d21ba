"""`manage.py expire_demo_accounts`: demo accounts past their days are offboarded, the others left be."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from access.models import Quota, QuotaChange
from accounts import api_tokens
from accounts.models import DemoMember, DemoSignup, User
from audit.models import AuditEvent
from tests.support.demo_support import ask_for_link, link_in

pytestmark = pytest.mark.django_db


def join_by_mail(client, email: str, mailoutbox) -> User:
    ask_for_link(client, email)
    assert client.post(link_in(mailoutbox[-1])).status_code == 302
    client.logout()
    return User.objects.get(email=email)


def age(person: User, days: float) -> None:
    """Move the person's demo start back by `days`, keeping its length."""
    member = person.demo
    shift = timedelta(days=days)
    DemoMember.objects.filter(pk=member.pk).update(
        joined=member.joined - shift, expires=member.expires - shift
    )


def expire() -> str:
    out = StringIO()
    call_command("expire_demo_accounts", stdout=out)
    return out.getvalue()


def test_it_offboards_an_expired_demo_account_and_leaves_the_others(client, seeded_demo, mailoutbox):
    old = join_by_mail(client, "old@example.org", mailoutbox)
    new = join_by_mail(client, "new@example.org", mailoutbox)
    staff = User.objects.create_user("boss", "boss@example.org", "pw-boss-123456", is_staff=True)
    _, raw = api_tokens.issue(old, name="cli")
    age(old, 7.01)
    age(new, 6.9)
    client.force_login(old)

    out = expire()

    old.refresh_from_db()
    new.refresh_from_db()
    staff.refresh_from_db()
    assert f"{old.get_username()}: offboarded" in out
    assert not old.is_active
    assert old.deactivated_reason == "Demo account ended after 7 days"
    assert api_tokens.authenticate(raw) is None
    assert not old.groups.filter(name="demo").exists()
    assert (old.demo.ended_how, old.demo.ended is not None) == ("offboarded", True)
    assert not Quota.objects.filter(user=old).exists()
    assert QuotaChange.objects.filter(kind="deleted", quota_label__contains=old.get_username()).exists()
    assert AuditEvent.objects.filter(action="offboard.deactivated", target=old.get_username()).exists()
    assert AuditEvent.objects.get(action="demo.expired").reason == "offboarded"

    assert new.is_active
    assert new.groups.filter(name="demo").exists()
    assert new.demo.ended is None
    assert Quota.objects.filter(user=new).exists()
    assert staff.is_active
    # The expired person's open session stops working at once.
    assert 'type="email"' in client.get("/demo/").content.decode()
    assert client.get("/")["Location"].startswith("/accounts/login/")


def test_an_expired_person_cannot_sign_in_with_a_link_any_more(client, seeded_demo, mailoutbox):
    old = join_by_mail(client, "old@example.org", mailoutbox)
    age(old, 8)
    expire()
    ask_for_link(client, "old@example.org")
    answer = client.post(link_in(mailoutbox[-1]))
    assert answer.status_code == 403
    assert "This demo account has ended" in answer.content.decode()


def test_a_person_who_joined_with_their_own_account_only_leaves_the_demo(client, seeded_demo):
    jane = User.objects.create(username="jane", email="jane@corp.example")
    client.force_login(jane)
    client.post("/demo/join/")
    age(jane, 8)

    out = expire()

    jane.refresh_from_db()
    assert "jane: left the demo" in out
    assert jane.is_active
    assert not jane.groups.filter(name="demo").exists()
    assert not Quota.objects.filter(user=jane).exists()
    assert not AuditEvent.objects.filter(action="offboard.deactivated").exists()
    assert AuditEvent.objects.get(action="demo.expired").reason == "left"


def test_running_it_again_changes_nothing(client, seeded_demo, mailoutbox):
    old = join_by_mail(client, "old@example.org", mailoutbox)
    age(old, 8)
    expire()
    events = AuditEvent.objects.count()
    assert expire() == ""
    assert AuditEvent.objects.count() == events


def test_it_forgets_old_links(client, seeded_demo, mailoutbox):
    ask_for_link(client, "a@example.org")
    ask_for_link(client, "b@example.org")
    DemoSignup.objects.filter(email="a@example.org").update(created=timezone.now() - timedelta(days=2))
    assert "1 old link(s) forgotten" in expire()
    assert list(DemoSignup.objects.values_list("email", flat=True)) == ["b@example.org"]
