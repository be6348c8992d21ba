"""The job pages: the dashboard, submit, the live list, one job, and API tokens."""

from __future__ import annotations

from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("clusters/<slug:slug>/submit/", views.submit_page, name="submit"),
    path("clusters/<slug:slug>/jobs/", views.job_list, name="list"),
    path("clusters/<slug:slug>/jobs/data", views.job_list_data, name="list-data"),
    path("clusters/<slug:slug>/jobs/<int:job_id>/", views.job_detail, name="detail"),
    path("clusters/<slug:slug>/jobs/<int:job_id>/cancel", views.job_cancel, name="cancel"),
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke", views.token_revoke, name="token-revoke"),
    path("tokens/cli/", views.token_for_cli, name="token-cli"),
]
