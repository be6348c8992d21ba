"""How sign-in behaves: allauth adapters for the company IdPs, and the receivers that act on every login."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any
from urllib.parse import urlencode

import requests
from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.models import EmailAddress
from allauth.account.signals import user_logged_in as console_login
from allauth.account.utils import user_email
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialApp, SocialLogin
from allauth.socialaccount.providers.base.constants import AuthError
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.contrib.auth import get_user_model
from django.contrib.auth import signals as auth_signals
from django.core.exceptions import MultipleObjectsReturned
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from accounts import groups, idp_check, oidc
from accounts.models import OidcSession, ScimResource
from audit.log import record

logger = logging.getLogger("clusterra.accounts")

# The raw ID token is kept in the session only to be sent back as id_token_hint at logout.
SESSION_LOGOUT_HINT = "clusterra_oidc_id_token"
SESSION_PROVIDER = "clusterra_oidc_provider"
_LOGOUT_HINT_ATTR = "_clusterra_id_token"

LOGIN = "auth.login"
LOGOUT = "auth.logout"


class AccountAdapter(DefaultAccountAdapter):
    """Local accounts: no password signup here, and sign-out that also ends the IdP session."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        # People arrive through the IdP; the demo's signup is a view of its own.
        return False

    def respond_user_inactive(self, request: HttpRequest, user: Any) -> HttpResponse:
        # Reached by a local password login of a deactivated person (IdP logins stop earlier);
        # Django's authenticate() refused it first, and on_login_failed audited that.
        return refusal_page(request, "deactivated")

    def get_logout_redirect_url(self, request: HttpRequest) -> str:
        # allauth asks before it ends the session, so the ID token is still there to read.
        # An explicit ?next= skips this: a post-logout URI must be registered at the IdP.
        return end_session_url(request) or super().get_logout_redirect_url(request)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """IdP sign-in: who may come in, how claims map to the person, one source per provider."""

    _shadowed_warned: set[str] = set()

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        # The default asks the account adapter, which keeps local signup closed; IdP people
        # are created on their first sign-in.
        return True

    def list_apps(self, request: HttpRequest, provider: Any = None, client_id: Any = None) -> list[SocialApp]:
        apps = super().list_apps(request, provider=provider, client_id=client_id)
        # Apps from settings (the environment) have no primary key. Such a provider is
        # configured there only: an admin row with the same id would be a second, silent truth.
        from_environment = {app.provider_id for app in apps if app.pk is None}
        kept = []
        for app in apps:
            if app.pk is not None and app.provider_id in from_environment:
                if app.provider_id not in self._shadowed_warned:
                    self._shadowed_warned.add(app.provider_id)
                    logger.warning(
                        "social application %r in the admin is ignored: CLUSTERRA_OIDC_PROVIDERS defines it",
                        app.provider_id,
                    )
                continue
            if app.provider == oidc.PROVIDER:
                app.settings = oidc.complete_settings(app.settings or {})
            kept.append(app)
        return kept

    def populate_user(self, request: HttpRequest, sociallogin: SocialLogin, data: dict) -> Any:
        user = super().populate_user(request, sociallogin, data)
        if not user_email(user):
            claims = oidc.claims_of(sociallogin.account.extra_data)
            names = _app_settings(sociallogin).get(oidc.EMAIL_CLAIMS_KEY, ["email"])
            email = oidc.email_from_claims(claims, names)
            if email:
                user_email(user, email)
                # Not vouched for as an e-mail address (it may be a UPN): never trusted for linking.
                sociallogin.email_addresses = [EmailAddress(email=email, verified=False, primary=True)]
        return user

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        settings = _app_settings(sociallogin)
        claims = oidc.claims_of(sociallogin.account.extra_data)
        user = sociallogin.user
        details = _identity(sociallogin)

        domain = settings.get(oidc.HOSTED_DOMAIN_KEY)
        if domain and domain != oidc.ANY_DOMAIN and str(claims.get("hd", "")).lower() != domain:
            raise ImmediateHttpResponse(
                refuse(
                    request, "wrong_domain", sociallogin=sociallogin, details={**details, "domain": domain}
                )
            )
        if not sociallogin.is_existing:
            provisioned = _provisioned_by_scim(claims)
            if provisioned is not None:
                # The IdP pushed this person over SCIM before their first sign-in: the same IdP's stable
                # id for them (Okta's user id, Entra's object id) in the signed ID token links the two.
                sociallogin.connect(request, provisioned)
                user = provisioned
        if sociallogin.is_existing:
            if not user.is_active:
                raise ImmediateHttpResponse(
                    refuse(request, "deactivated", actor=user, sociallogin=sociallogin)
                )
            return
        email = user_email(user)
        if email and _email_in_use(email):
            # Linking by address would let whoever controls that address at some IdP take over
            # the console account; an administrator links them instead.
            raise ImmediateHttpResponse(
                refuse(request, "email_in_use", sociallogin=sociallogin, details={**details, "email": email})
            )

    def on_authentication_error(
        self,
        request: HttpRequest,
        provider: Any,
        error: Any = None,
        exception: Any = None,
        extra_context: Any = None,
    ) -> None:
        idp_error = request.GET.get("error", "")
        description = request.GET.get("error_description", "")[:500]
        details = {"provider": getattr(provider, "sub_id", ""), "idp_error": idp_error}
        if exception is not None:
            logger.warning("sign-in through %s failed: %r", details["provider"], exception)
            details["failure"] = type(exception).__name__
        if error == AuthError.CANCELLED:
            reason, outcome = "idp_refused", "denied"
        elif idp_error:
            reason, outcome = "idp_error", "denied"
        else:
            reason, outcome = "sign_in_failed", "error"
        response = refuse(
            request,
            reason,
            provider=provider,
            outcome=outcome,
            idp_message=description,
            details=details,
        )
        raise ImmediateHttpResponse(response)


# What a refused person reads: what happened, then what to do next.
REFUSALS: dict[str, tuple[str, str]] = {
    "deactivated": (
        "Your console account is deactivated",
        "You signed in correctly, but your access to this console has been turned off. "
        "If you think this is a mistake, ask your administrator to reactivate your account.",
    ),
    "idp_refused": (
        "{idp} did not let you in",
        "Your identity provider refused the sign-in. If you need access to this console, "
        "ask your administrator to give you access to the application there.",
    ),
    "idp_error": (
        "{idp} reported a problem",
        "Your identity provider could not complete the sign-in. Try again; if it keeps "
        "happening, tell your administrator what the message below says.",
    ),
    "sign_in_failed": (
        "Sign-in could not be completed",
        "The answer from your identity provider could not be checked, or the sign-in took too "
        "long. Go back to the sign-in page and try again.",
    ),
    "wrong_domain": (
        "This account is not from your organisation",
        "Sign in with your organisation's account, not a personal one.",
    ),
    "email_in_use": (
        "Your e-mail address belongs to another console account",
        "A console account with this address exists but was not created through this sign-in. "
        "Ask an administrator to link your sign-in to it.",
    ),
}


def refuse(
    request: HttpRequest,
    reason: str,
    *,
    actor: Any = None,
    sociallogin: SocialLogin | None = None,
    provider: Any = None,
    outcome: str = "denied",
    idp_message: str = "",
    details: dict | None = None,
) -> HttpResponse:
    """Audit a refused sign-in and answer with the page that explains it (HTTP 403)."""
    if sociallogin is not None:
        provider = sociallogin.provider
        details = {**_identity(sociallogin), **(details or {})}
    idp = getattr(provider, "name", "") or "Your identity provider"
    title = REFUSALS[reason][0].format(idp=idp)
    target = (details or {}).get("subject", "")
    record(
        LOGIN,
        actor=actor,
        target=target,
        outcome=outcome,
        reason=reason,
        message=title + (f": {idp_message}" if idp_message else ""),
        request=request,
        details=details,
    )
    return refusal_page(request, reason, idp=idp, idp_message=idp_message)


def _provisioned_by_scim(claims: dict[str, Any]) -> Any:
    """The person a SCIM push made for these claims (externalId = the ID token's oid or sub), if any."""
    keys = [str(claims[k]) for k in ("oid", "sub") if claims.get(k)]
    if not keys:
        return None
    found = ScimResource.objects.filter(kind="User", external_id__in=keys, user__isnull=False).select_related(
        "user"
    )
    rows = list(found[:2])
    return rows[0].user if len(rows) == 1 else None


def refusal_page(request: HttpRequest, reason: str, *, idp: str = "", idp_message: str = "") -> HttpResponse:
    title, explanation = REFUSALS[reason]
    context = {
        "title": title.format(idp=idp or "Your identity provider"),
        "explanation": explanation,
        "idp_message": idp_message,
        "reason": reason,
    }
    return render(request, "account/login_refused.html", context, status=403)


def remember_id_token(sociallogin: SocialLogin, id_token: str | None) -> None:
    """Carry the raw ID token from the token response to the login receiver (see accounts.views)."""
    setattr(sociallogin, _LOGOUT_HINT_ATTR, id_token or "")


def end_session_url(request: HttpRequest) -> str | None:
    """The IdP's RP-initiated logout URL for this session, or None when the IdP has none."""
    id_token = request.session.get(SESSION_LOGOUT_HINT)
    provider_id = request.session.get(SESSION_PROVIDER)
    if not (id_token and provider_id and request.user.is_authenticated):
        return None
    try:
        adapter = OpenIDConnectOAuth2Adapter(request, provider_id)
        endpoint = adapter.openid_config.get("end_session_endpoint")
        client_id = adapter.get_provider().app.client_id
    except (SocialApp.DoesNotExist, MultipleObjectsReturned, requests.RequestException, ValueError) as e:
        # The IdP being unreachable must not keep anyone signed in to the console.
        logger.warning("cannot reach %s to end its session: %s", provider_id, e)
        return None
    if not endpoint:
        return None  # Google, for one, publishes no end_session_endpoint
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(reverse("account_login")),
            "client_id": client_id,
        }
    )
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


@receiver(console_login, dispatch_uid="clusterra.accounts.console_login")
def on_console_login(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    """A sign-in through /accounts/: sync IdP groups, audit it, let POSIX mapping know."""
    sociallogin: SocialLogin | None = kwargs.get("sociallogin")
    if sociallogin is None:
        record(LOGIN, actor=user, target=user.get_username(), request=request, details={"method": "password"})
        return
    provider_id = sociallogin.account.provider
    claims = oidc.claims_of(sociallogin.account.extra_data)
    id_token = getattr(sociallogin, _LOGOUT_HINT_ATTR, "")
    if id_token:
        request.session[SESSION_LOGOUT_HINT] = id_token
        request.session[SESSION_PROVIDER] = provider_id
    _remember_idp_session(request, user, provider_id, sociallogin.account.extra_data)
    refresh = getattr(sociallogin.token, "token_secret", "") if sociallogin.token else ""
    if refresh:
        idp_check.remember(user, provider_id, refresh)

    details = {**_identity(sociallogin), "method": "idp"}
    claim = _app_settings(sociallogin).get(oidc.GROUPS_CLAIM_KEY, "groups")
    if claim:
        result = groups.sync(user, provider_id, groups.claim_values(claims, claim))
        details.update(result.as_details())
    record(LOGIN, actor=user, target=details["subject"], request=request, details=details)

    hook = _posix_on_login()
    if hook is not None:
        hook(user, claims)


def _remember_idp_session(request: HttpRequest, user: Any, provider_id: str, extra_data: Any) -> None:
    """Which IdP session (iss, sid, sub) opened this console session: for that IdP's back-channel logout."""
    id_token = extra_data.get("id_token") if isinstance(extra_data, dict) else None
    if not isinstance(id_token, dict) or not id_token.get("iss") or not id_token.get("sub"):
        return
    if request.session.session_key is None:
        request.session.save()
    OidcSession.objects.update_or_create(
        session_key=request.session.session_key,
        defaults={
            "provider_id": provider_id,
            "issuer": str(id_token["iss"])[:255],
            "sid": str(id_token.get("sid") or "")[:255],
            "sub": str(id_token["sub"])[:255],
            "user": user,
        },
    )


@receiver(auth_signals.user_logged_in, dispatch_uid="clusterra.accounts.admin_login")
def on_admin_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # The admin's own login form bypasses allauth, so its logins are audited here.
    match = getattr(request, "resolver_match", None)
    if match is not None and match.view_name == "admin:login":
        record(LOGIN, actor=user, target=user.get_username(), request=request, details={"method": "admin"})


@receiver(auth_signals.user_login_failed, dispatch_uid="clusterra.accounts.login_failed")
def on_login_failed(
    sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # A refused local password (admin or /accounts/login/); wrong IdP passwords stay at the IdP.
    # Django refuses a deactivated person even with the right password, so say which it was.
    name = str(credentials.get("username") or credentials.get("email") or "")
    person = get_user_model().objects.filter(username=name).first() if name else None
    deactivated = person is not None and not person.is_active
    record(
        LOGIN,
        actor=person or name,
        target=name,
        outcome="denied",
        reason="deactivated" if deactivated else "bad_credentials",
        request=request,
        details={"method": "password"},
    )


@receiver(auth_signals.user_logged_out, dispatch_uid="clusterra.accounts.logout")
def on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    session = getattr(request, "session", None) or {}
    details = {
        "provider": session.get(SESSION_PROVIDER, ""),
        "idp_session": bool(session.get(SESSION_LOGOUT_HINT)),
    }
    record(LOGOUT, actor=user, target=user.get_username(), request=request, details=details)


def _posix_on_login() -> Any:
    # accounts.posix is written separately; until it exists, sign-in works without the hook.
    # find_spec rather than catching ImportError, so a broken posix module still fails loudly.
    if importlib.util.find_spec("accounts.posix") is None:
        return None
    return getattr(importlib.import_module("accounts.posix"), "on_login", None)


def _app_settings(sociallogin: SocialLogin) -> dict[str, Any]:
    app = getattr(sociallogin.provider, "app", None)
    return oidc.complete_settings(getattr(app, "settings", None) or {})


def _identity(sociallogin: SocialLogin) -> dict[str, str]:
    return {"provider": sociallogin.account.provider, "subject": sociallogin.account.uid}


def _email_in_use(email: str) -> bool:
    return (
        get_user_model().objects.filter(email__iexact=email).exists()
        or EmailAddress.objects.filter(email__iexact=email).exists()
    )
