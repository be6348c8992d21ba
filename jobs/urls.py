"""The job pages: the dashboard, submit, the live list, one job."""

from __future__ import annotations

from django.urls import path

from jobs import views

# `<jobid:…>` is registered by jobs.control (123, or 123_4 for one task of array 123).

app_name = "jobs"

urlpatterns = [
    path("clusters/<slug:slug>/submit/", views.submit_page, name="submit"),
    path("clusters/<slug:slug>/jobs/", views.job_list, name="list"),
    path("clusters/<slug:slug>/jobs/data", views.job_list_data, name="list-data"),
    path("clusters/<slug:slug>/jobs/<jobid:job_id>/", views.job_detail, name="detail"),
    path("clusters/<slug:slug>/jobs/<jobid:job_id>/cancel", views.job_cancel, name="cancel"),
]
