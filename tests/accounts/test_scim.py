"""/scim/v2/: the RFC checked by scim2-tester, the shapes Okta and Entra ID really send, and what they do.

scim2-tester drives the console's own WSGI application (every middleware, the real URL table)
in this process; the vendor requests are the ones in docs/scim-and-backchannel-logout.md §2.
"""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth.models import Group
from django.core.wsgi import get_wsgi_application
from scim2_client.engines.wsgi import WSGISCIMClient
from scim2_tester import Status, check_server

from access.models import Grant
from accounts import api_tokens, offboarding, scim
from accounts.models import ScimResource, ScimToken, User
from audit.models import AuditEvent
from clusters.models import Cluster
from tests.support.fixtures_idp import sign_in

pytestmark = pytest.mark.django_db

BASE = "/scim/v2"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture
def token(db) -> str:
    return scim.issue_token("Okta test")


@pytest.fixture
def push(client, token):
    """The IdP's SCIM client: JSON bodies, the bearer token, no session."""

    def call(method: str, path: str, body: dict | None = None, **extra):
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}", **extra}
        if body is not None:
            kwargs |= {"data": json.dumps(body), "content_type": "application/scim+json"}
        return getattr(client, method.lower())(f"{BASE}{path}", **kwargs)

    return call


# Committed for real: the console's WSGI handler closes and reopens database connections per request,
# as in production, which a test wrapped in one transaction would not survive.
@pytest.mark.django_db(transaction=True)
def test_the_rfc_as_scim2_tester_checks_it(token):
    client = WSGISCIMClient(
        get_wsgi_application(),
        base_url="http://localhost/scim/v2",
        headers={"Authorization": f"Bearer {token}"},
    )
    results = check_server(client)
    failed = [f"{r.title}: {r.reason}" for r in results if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    passed = sum(r.status == Status.SUCCESS for r in results)
    skipped = sum(r.status == Status.SKIPPED for r in results)
    assert not failed, failed
    assert passed >= 60
    print(f"SCIM compliance (scim2-tester): {passed} checks passed, {len(failed)} failed, {skipped} skipped")


def test_no_token_no_answer(client, token):
    assert client.get(f"{BASE}/Users").status_code == 401
    assert client.get(f"{BASE}/Users", HTTP_AUTHORIZATION="Bearer scim_wrong").status_code == 401
    ScimToken.objects.update(revoked=timezone_now())
    refused = client.get(f"{BASE}/Users", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 401
    assert refused.json()["status"] == "401"
    assert refused["Content-Type"] == "application/scim+json"
    assert ScimToken.objects.get().digest != token  # only the hash is kept


def timezone_now():
    from django.utils import timezone

    return timezone.now()


def okta_user(login: str, *, active: bool = True) -> dict:
    return {
        "schemas": [USER],
        "userName": f"{login}@example.org",
        "name": {"givenName": login.title(), "familyName": "Example"},
        "emails": [{"primary": True, "value": f"{login}@example.org", "type": "work"}],
        "displayName": f"{login.title()} Example",
        "externalId": f"00u{login}",
        "groups": [],
        "password": "a random one Okta sends",
        "active": active,
    }


def test_okta_creates_finds_and_deactivates_with_a_put(push):
    assert (
        push("GET", '/Users?filter=userName eq "ada@example.org"&startIndex=1&count=100').json()[
            "totalResults"
        ]
        == 0
    )
    created = push("POST", "/Users", okta_user("ada"))
    assert created.status_code == 201
    scim_id = created.json()["id"]
    person = User.objects.get(email="ada@example.org")
    assert person.is_active
    assert not person.has_usable_password()  # Okta's password is never a way in
    _, raw = api_tokens.issue(person)
    found = push("GET", '/Users?filter=userName eq "ADA@example.org"').json()
    assert [r["id"] for r in found["Resources"]] == [scim_id]
    assert push("GET", '/Users?filter=externalId eq "00uada"').json()["totalResults"] == 1
    assert (
        push("GET", '/Users?filter=emails[type eq "work"].value eq "ada@example.org"').json()["totalResults"]
        == 1
    )

    started = time.monotonic()
    put = push("PUT", f"/Users/{scim_id}", okta_user("ada", active=False))
    took = time.monotonic() - started

    assert put.status_code == 200
    assert put.json()["active"] is False
    person.refresh_from_db()
    assert not person.is_active
    assert api_tokens.authenticate(raw) is None
    assert AuditEvent.objects.get(action="offboard.finished").actor_name.startswith("SCIM")
    print(f"SCIM active:false (Okta PUT) ended every way in in {took:.2f} s")
    # Okta reactivates the same way; SCIM undoes what SCIM did.
    assert push("PUT", f"/Users/{scim_id}", okta_user("ada")).json()["active"] is True
    person.refresh_from_db()
    assert person.is_active


def test_entra_deactivates_with_a_capitalised_patch_and_a_string(push):
    scim_id = push("POST", "/Users", okta_user("bea")).json()["id"]
    patch = {"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}
    answer = push("PATCH", f"/Users/{scim_id}", patch)
    assert answer.status_code == 200
    assert not User.objects.get(email="bea@example.org").is_active
    # Entra's multi-attribute replace in its compliant dialect: one path-less op whose keys are paths.
    rename = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "value": {"name.givenName": "Beatrix", "displayName": "Bea X"}}],
    }
    shown = push("PATCH", f"/Users/{scim_id}", rename).json()
    assert shown["name"]["givenName"] == "Beatrix"
    assert shown["active"] is False  # a rename does not undo an offboarding


def test_someone_an_administrator_offboarded_stays_offboarded(push):
    scim_id = push("POST", "/Users", okta_user("cyd")).json()["id"]
    person = User.objects.get(email="cyd@example.org")
    offboarding.offboard(person, by="admin", reason="left the company")
    push("PUT", f"/Users/{scim_id}", okta_user("cyd"))  # Okta's routine PUT still says active
    person.refresh_from_db()
    assert not person.is_active


def test_delete_offboards_and_forgets_the_link(push):
    scim_id = push("POST", "/Users", okta_user("dee")).json()["id"]
    assert push("DELETE", f"/Users/{scim_id}").status_code == 204
    assert push("GET", f"/Users/{scim_id}").status_code == 404
    person = User.objects.get(email="dee@example.org")
    assert not person.is_active
    assert person.deactivated_reason == scim.DELETED


def test_group_pushes_move_people_in_and_out_of_the_console_group_that_grants_access(push):
    cluster = Cluster.objects.create(slug="c1", name="Cluster One", slurmrestd_url="http://127.0.0.1:9")
    ada = push("POST", "/Users", okta_user("ada")).json()["id"]
    bob = push("POST", "/Users", okta_user("bob")).json()["id"]
    group = push("POST", "/Groups", {"schemas": [GROUP], "displayName": "hpc-users", "members": []}).json()
    Grant.objects.create(cluster=cluster, group=Group.objects.get(name="hpc-users"), partitions="debug")

    # Okta: add by path "members"; Entra: "Add" with a "$ref": null.
    push(
        "PATCH",
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": ada, "display": "ada"}]}],
        },
    )
    push(
        "PATCH",
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": bob, "$ref": None}]}],
        },
    )
    team = Group.objects.get(name="hpc-users")
    assert set(team.user_set.values_list("email", flat=True)) == {"ada@example.org", "bob@example.org"}
    shown = push("GET", f"/Users/{ada}").json()
    assert shown["groups"] == [{"value": group["id"], "display": "hpc-users"}]

    # Okta removes by filter, Entra by a value list.
    push(
        "PATCH",
        f"/Groups/{group['id']}",
        {"schemas": [PATCH], "Operations": [{"op": "remove", "path": f'members[value eq "{ada}"]'}]},
    )
    push(
        "PATCH",
        f"/Groups/{group['id']}",
        {"schemas": [PATCH], "Operations": [{"op": "Remove", "path": "members", "value": [{"value": bob}]}]},
    )
    assert not team.user_set.exists()
    assert push("GET", '/Groups?filter=displayName eq "hpc-users"').json()["totalResults"] == 1
    assert ScimResource.objects.filter(kind="Group").count() == 1


def test_bad_requests_get_a_scim_error_and_change_nothing(push):
    assert push("POST", "/Users", {"schemas": [USER]}).json()["scimType"] == "invalidValue"
    push("POST", "/Users", okta_user("eve"))
    clash = push("POST", "/Users", okta_user("eve"))
    assert (clash.status_code, clash.json()["scimType"]) == (409, "uniqueness")
    assert push("GET", '/Users?filter=userName co "eve"').json()["scimType"] == "invalidFilter"
    assert push("PATCH", "/Users/not-a-uuid", {"schemas": [PATCH], "Operations": []}).status_code == 404
    scim_id = ScimResource.objects.get(kind="User").pk
    empty = push("PATCH", f"/Users/{scim_id}", {"schemas": [PATCH], "Operations": []})
    assert empty.status_code == 400
    assert push("GET", "/Nothing").status_code == 404
    assert User.objects.filter(email="eve@example.org").count() == 1


@pytest.mark.idp
def test_a_person_pushed_before_their_first_sign_in_is_the_one_who_signs_in(client, idp, push):
    """Okta assigns the app (a SCIM create) before the person ever signs in; their sign-in finds them."""
    scim_id = push("POST", "/Users", okta_user("alice") | {"externalId": "alice"}).json()["id"]
    pushed = User.objects.get(email="alice@example.org")

    signed_in = sign_in(client, "alice", "alice-pw")

    assert signed_in.console.status_code == 302
    assert client.session["_auth_user_id"] == str(pushed.pk)
    assert User.objects.filter(email="alice@example.org").count() == 1
    # And the IdP's deactivation reaches the very person who is signed in.
    push(
        "PATCH",
        f"/Users/{scim_id}",
        {"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": False}}]},
    )
    assert client.get("/").status_code == 302  # signed out: Django refuses an inactive person's session


def test_revoking_a_scim_token_in_the_admin_asks_first(admin_client, push, token):
    row = ScimToken.objects.get(prefix=token[:12])
    asked = admin_client.post(
        "/admin/accounts/scimtoken/", {"action": "revoke", "_selected_action": [row.pk]}
    )
    assert asked.status_code == 200
    assert "Revoke 1 SCIM token(s)?" in asked.content.decode()
    assert push("GET", "/Users").status_code == 200  # asking revoked nothing
    admin_client.post(
        "/admin/accounts/scimtoken/", {"action": "revoke", "_selected_action": [row.pk], "post": "yes"}
    )
    assert push("GET", "/Users").status_code == 401
    assert AuditEvent.objects.filter(action="scim.token_revoked").exists()
