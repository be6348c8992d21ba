"""The console's URL map."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from clusterra_site import views
from jobs import views as job_views

admin.site.site_header = "Clusterra administration"
admin.site.site_title = "Clusterra"

urlpatterns = [
    path("", job_views.dashboard, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # Ours first: it stands in for allauth's OIDC callback (keeps the ID token for logout).
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("demo/", include("accounts.demo.urls")),
    # IdPs push people and groups here (Okta, Entra ID); bearer tokens from the admin, no session.
    path("scim/v2/", include("accounts.scim_urls")),
    path("", include("terminal.urls")),
    path("", include("jobs.urls")),
    path("", include("files.urls")),
    path("", include("job_templates.urls")),
    path("", include("accounts.token_urls")),
    path("v1/", include("clusterra_site.api")),
]
