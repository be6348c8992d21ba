"""Sign-in pages of our own: the OIDC callback that keeps the ID token for logout."""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.models import SocialApp, SocialLogin, SocialToken
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse

from accounts import adapter


class IdTokenKeepingAdapter(OpenIDConnectOAuth2Adapter):
    """allauth's OIDC adapter, plus the raw ID token, which allauth decodes and then drops.

    RP-initiated logout needs it as id_token_hint (Okta refuses a logout without one).
    """

    def complete_login(
        self, request: HttpRequest, app: Any, token: SocialToken, **kwargs: Any
    ) -> SocialLogin:
        login = super().complete_login(request, app, token, **kwargs)
        adapter.remember_id_token(login, kwargs.get("response", {}).get("id_token"))
        return login


@login_not_required
def oidc_callback(request: HttpRequest, provider_id: str) -> HttpResponse:
    """Stands in for allauth's callback at the same URL; everything else is allauth's flow."""
    try:
        view = OAuth2CallbackView.adapter_view(IdTokenKeepingAdapter(request, provider_id))
        return view(request)
    except SocialApp.DoesNotExist:
        raise Http404("No such sign-in provider") from None
