"""Who is signed in on a browser session: Django's AuthenticationMiddleware, the person's row prepared.

Django asks the session's backend for the user on every page; ModelBackend (and allauth's backend, which
keeps its get_user) builds and compiles an ORM get of the user row each time, ~0.4 ms of a page's ~2-7
(bench row 8). `SignedInMiddleware` makes `request.user` the way django.contrib.auth.get_user does, step
for step, with that one lookup prepared (prepared/); every check stays: the session's backend must still
be configured, the backend's own `user_can_authenticate` decides (a deactivated person is nobody), and
the session's hash must match the person's password now (or a fallback secret's, when the key is cycled),
otherwise the session is flushed. A backend with its own `get_user` is asked as Django would ask it.
`request.auser` (async code) is Django's own.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare
from django.utils.functional import SimpleLazyObject

from accounts.models import User
from prepared import Prepared, fields_of, instance

_PERSON = Prepared(lambda pk: User.objects.filter(pk=pk).values(*fields_of(User)), int)


class SignedInMiddleware(AuthenticationMiddleware):
    """AuthenticationMiddleware whose `request.user` is `signed_in(request)`, worked out once a request."""

    def process_request(self, request: Any) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: _once(request))


def _once(request: Any) -> Any:
    if not hasattr(request, "_cached_user"):
        request._cached_user = signed_in(request)
    return request._cached_user


def signed_in(request: Any) -> Any:
    """The session's person, or AnonymousUser: what django.contrib.auth.get_user says."""
    session = request.session
    try:
        user_id = User._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    except ValidationError:
        # A session whose user id is not one; Django's get_user raises here, which a page shows as a 500.
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    backend = load_backend(backend_path)
    if type(backend).get_user is ModelBackend.get_user:
        found = _PERSON.rows(user_id)
        user = instance(User, found[0]) if found else None
        if user is not None and not backend.user_can_authenticate(user):
            user = None
    else:
        user = backend.get_user(user_id)
    if user is None:
        return AnonymousUser()
    session_hash = session.get(HASH_SESSION_KEY)
    current = user.get_session_auth_hash()
    if session_hash and constant_time_compare(session_hash, current):
        return user
    if session_hash and any(
        constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash()
    ):
        # Signed in under a secret key being retired: the session moves to the current one.
        session.cycle_key()
        session[HASH_SESSION_KEY] = current
        return user
    session.flush()
    return AnonymousUser()
