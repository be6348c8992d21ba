"""The API tokens pages, at the site's root (/tokens/), not under /accounts/ where allauth's pages are."""

from __future__ import annotations

from django.urls import path

from accounts import token_views

app_name = "accounts"

urlpatterns = [
    path("tokens/", token_views.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke", token_views.token_revoke, name="token-revoke"),
    path("tokens/cli/", token_views.token_for_cli, name="token-cli"),
]
