"""OIDC back-channel logout from the real test IdP: a session ended there ends the console's, nothing else.

The IdP (npm oidc-provider) signs and posts the logout token; the console under test is Django's test
client, which the IdP cannot reach, so a receiver on loopback catches the token and the test hands it
on, as the IdP's own POST would: no cookie, a form with `logout_token`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client

from accounts.models import OidcSession
from audit.models import AuditEvent
from tests.support.fixtures_idp import CLIENT_ID, PROVIDER_ID, confirm_idp_logout, sign_in

pytestmark = [pytest.mark.idp, pytest.mark.django_db]

URL = f"/accounts/oidc/{PROVIDER_ID}/backchannel-logout/"


def from_the_idp(token: str):
    """The IdP's own request: a form post with no cookie."""
    return Client().post(URL, {"logout_token": token})


def signed_in_console(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_logout_at_the_idp_ends_the_console_session_it_opened(client, idp):
    signed_in = sign_in(client, "alice", "alice-pw")
    assert signed_in_console(client)
    kept = OidcSession.objects.get()
    assert (kept.issuer, kept.sub, kept.provider_id) == (idp.issuer, "alice", PROVIDER_ID)
    assert kept.sid  # the client asked for sid in its ID tokens

    started = time.monotonic()
    confirm_idp_logout(signed_in.browser, f"{idp.issuer}/session/end")
    token = idp.next_logout_token()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sid"] == kept.sid

    answer = from_the_idp(token)
    took = time.monotonic() - started

    assert answer.status_code == 200
    assert answer["Cache-Control"] == "no-store"
    assert not signed_in_console(client)
    assert client.get("/").status_code == 302
    assert not OidcSession.objects.exists()
    event = AuditEvent.objects.get(action="auth.backchannel_logout")
    assert event.details["sessions_ended"] == 1
    assert token not in json.dumps(event.details) + event.message
    print(f"back-channel logout ended the console session in {took:.2f} s")

    # The same token again is a replay.
    assert from_the_idp(token).status_code == 400


def test_a_session_of_someone_else_is_left_alone(client, idp):
    sign_in(client, "alice", "alice-pw")
    other = Client()
    bob = sign_in(other, "bob", "bob-pw")
    confirm_idp_logout(bob.browser, f"{idp.issuer}/session/end")
    assert from_the_idp(idp.next_logout_token()).status_code == 200
    assert signed_in_console(client)
    assert not signed_in_console(other)


def test_a_token_that_does_not_hold_ends_nothing(client, idp):
    signed_in = sign_in(client, "alice", "alice-pw")
    confirm_idp_logout(signed_in.browser, f"{idp.issuer}/session/end")
    token = idp.next_logout_token()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "bob"}).encode()).rstrip(b"=").decode()

    assert from_the_idp(f"{header}.{forged}.{signature}").status_code == 400  # the signature no longer fits
    assert from_the_idp("").status_code == 400
    assert from_the_idp("not.a.token").status_code == 400
    assert Client().get(URL).status_code == 405
    assert signed_in_console(client)
    refusals = AuditEvent.objects.filter(action="auth.backchannel_logout", outcome="denied")
    assert refusals.count() == 3


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"nonce": "n"}, "carries a nonce"),
        ({"events": {}}, "no back-channel logout event"),
        ({"sub": None, "sid": None}, "neither a session"),
        ({"aud": "someone-else"}, "do not hold"),
        ({"exp": 1}, "do not hold"),
    ],
)
def test_every_claim_the_specification_asks_for_is_checked(client, idp, monkeypatch, change, why):
    """Tokens signed with a key the console is made to trust, each wrong in one way."""
    from accounts import backchannel

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    class Keys:
        def get_signing_key_from_jwt(self, token):
            return jwt.PyJWK(json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "RS256")

    monkeypatch.setattr(backchannel, "_key_client", lambda uri: Keys())
    now = int(time.time())
    right = {
        "iss": idp.issuer,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "sub": "alice",
        "sid": "s1",
        "events": {backchannel.EVENT: {}},
    }
    wrong = {k: v for k, v in (right | change).items() if v is not None}
    answer = from_the_idp(jwt.encode(wrong | {"jti": uuid.uuid4().hex}, key, algorithm="RS256"))
    assert answer.status_code == 400
    assert why in answer.json()["error_description"]
    # The same key, the claims put right: accepted (so it was the one change that was refused).
    assert (
        from_the_idp(jwt.encode(right | {"jti": uuid.uuid4().hex}, key, algorithm="RS256")).status_code == 200
    )
