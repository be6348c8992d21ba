"""Signing out ends the console session and, where the IdP allows it, the IdP session too."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from audit.models import AuditEvent
from tests.support.fixtures_idp import AFTER_LOGOUT, CLIENT_ID, confirm_idp_logout, sign_in

pytestmark = [pytest.mark.idp, pytest.mark.django_db]


def test_e_logout_redirects_to_the_idp_end_session_endpoint_with_id_token_hint(client, idp):
    signed_in = sign_in(client, "alice", "alice-pw")

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{idp.issuer}/session/end"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["post_logout_redirect_uri"] == AFTER_LOGOUT
    assert query["client_id"] == CLIENT_ID
    hint = jwt.decode(query["id_token_hint"], options={"verify_signature": False})
    assert (hint["sub"], hint["aud"], hint["iss"]) == ("alice", CLIENT_ID, idp.issuer)
    assert "_auth_user_id" not in client.session

    # The IdP accepts the hint, ends its session, and sends the browser back to the console.
    assert confirm_idp_logout(signed_in.browser, response["Location"]) == AFTER_LOGOUT
    again = sign_in(client, "alice", "wrong", browser=signed_in.browser)
    assert again.idp_page.status_code == 401  # the IdP asked for the password again: no SSO left


def test_without_logout_at_the_idp_its_session_would_sign_the_person_straight_back_in(client, idp):
    # Why the redirect above matters: the IdP remembers the browser.
    signed_in = sign_in(client, "alice", "alice-pw")
    client.logout()

    again = sign_in(client, "alice", "wrong", browser=signed_in.browser)

    assert again.idp_page is None
    assert again.console.status_code == 302


def test_logout_is_audited(client, idp):
    sign_in(client, "bob", "bob-pw")

    client.post("/accounts/logout/")

    event = AuditEvent.objects.get(action="auth.logout")
    assert event.actor.email == "bob@example.org"
    assert event.details == {"provider": "testidp", "idp_session": True}


def test_a_local_session_signs_out_locally(client, django_user_model):
    person = django_user_model.objects.create_user("ada", "ada@example.org", "pw-ada-123456")
    client.force_login(person)

    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert AuditEvent.objects.get(action="auth.logout").details["idp_session"] is False
