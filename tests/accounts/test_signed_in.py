"""accounts.signed_in: the person behind a session is whoever django.contrib.auth.get_user says, case by case.

Each case makes a real session (the configured engine), then asks both Django's get_user and
signed_in on a copy of it, and compares who they found and what became of the session.
"""

from __future__ import annotations

from importlib import import_module

import pytest
from django.conf import settings
from django.contrib import auth
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.test import RequestFactory

from accounts.models import User
from accounts.signed_in import signed_in

pytestmark = pytest.mark.django_db

MODEL = "django.contrib.auth.backends.ModelBackend"
ALLAUTH = "allauth.account.auth_backends.AuthenticationBackend"


def person(email: str = "ada@example.test", **fields) -> User:
    made = User.objects.create(username=email, email=email, **fields)
    made.set_password("correct horse battery staple")
    made.save()
    return made


def session_of(values: dict) -> str:
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore()
    session.update(values)
    session.save()
    return session.session_key


def ask(how, key: str):
    """`how`'s answer for a request carrying session `key`, and that session's values afterwards."""
    engine = import_module(settings.SESSION_ENGINE)
    request = RequestFactory().get("/")
    request.session = engine.SessionStore(key)
    who = how(request)
    key = request.session.session_key  # None once flushed
    if key:
        request.session.save()
    after = dict(engine.SessionStore(key).load()) if key else {}
    return (who.pk if who.is_authenticated else None), after


def same_answer(values: dict):
    ours = ask(signed_in, session_of(values))
    djangos = ask(auth.get_user, session_of(values))
    assert ours == djangos, (ours, djangos)
    return ours


def signed_in_values(user: User, backend: str = MODEL) -> dict:
    return {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: backend,
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }


@pytest.mark.parametrize("backend", [MODEL, ALLAUTH])
def test_a_signed_in_session_is_its_person_with_every_field(backend):
    ada = person()
    who, after = same_answer(signed_in_values(ada, backend))
    assert who == ada.pk
    assert after[SESSION_KEY] == str(ada.pk)
    engine = import_module(settings.SESSION_ENGINE)
    request = RequestFactory().get("/")
    request.session = engine.SessionStore(session_of(signed_in_values(ada, backend)))
    found = signed_in(request)
    fresh = User.objects.get(pk=ada.pk)
    assert not found._state.adding
    for field in User._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(fresh, field.attname), field.name


def test_a_deactivated_person_is_nobody():
    ada = person(is_active=False)
    assert same_answer(signed_in_values(ada))[0] is None


def test_a_changed_password_ends_the_session():
    ada = person()
    values = signed_in_values(ada)
    ada.set_password("another horse")
    ada.save()
    who, after = same_answer(values)
    assert who is None
    assert after == {}


def test_a_session_without_its_hash_is_flushed():
    ada = person()
    values = signed_in_values(ada)
    del values[HASH_SESSION_KEY]
    who, after = same_answer(values)
    assert who is None
    assert after == {}


def test_a_backend_no_longer_configured_is_nobody():
    ada = person()
    assert same_answer(signed_in_values(ada, "django.contrib.auth.backends.RemoteUserBackend"))[0] is None


def test_a_person_since_deleted_is_nobody():
    ada = person()
    values = signed_in_values(ada)
    ada.delete()
    assert same_answer(values)[0] is None


def test_a_signed_out_session_is_nobody():
    assert same_answer({"something": "else"})[0] is None


def test_a_session_under_a_retired_secret_moves_to_the_current_one(settings):
    ada = person()
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "an old secret " * 4, []
    values = signed_in_values(ada)
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the new secret " * 4, ["an old secret " * 4]
    who, after = same_answer(values)
    assert who == ada.pk
    assert after[HASH_SESSION_KEY] == ada.get_session_auth_hash()


def test_pages_use_it(client):
    assert "accounts.signed_in.SignedInMiddleware" in settings.MIDDLEWARE
    ada = person()
    client.force_login(ada)
    response = client.get("/")
    assert response.status_code == 200
    assert response.wsgi_request.user.pk == ada.pk
