"""Sign-in URLs the console adds in front of allauth's (include these before allauth.urls)."""

from __future__ import annotations

from allauth.socialaccount import app_settings
from django.urls import path

from accounts import backchannel, views

# Same path and name as allauth's callback, so the redirect URI registered at the IdP is unchanged.
_prefix = f"{app_settings.OPENID_CONNECT_URL_PREFIX}/" if app_settings.OPENID_CONNECT_URL_PREFIX else ""

urlpatterns = [
    path(f"{_prefix}<str:provider_id>/login/callback/", views.oidc_callback, name="openid_connect_callback"),
    # The IdP's back-channel logout URI: https://<console>/accounts/oidc/<id>/backchannel-logout/
    path(
        f"{_prefix}<str:provider_id>/backchannel-logout/", backchannel.logout, name="oidc_backchannel_logout"
    ),
]
