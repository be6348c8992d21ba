"""The job pages: the dashboard, submit, the live list, one job."""

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
]
