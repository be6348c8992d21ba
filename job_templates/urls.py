"""The job template pages of a cluster: the list, and one template to fill."""

from __future__ import annotations

from django.urls import path

from job_templates import views

app_name = "job_templates"

urlpatterns = [
    path("clusters/<slug:slug>/templates/", views.template_list, name="list"),
    path("clusters/<slug:slug>/templates/<slug:template>/", views.fill, name="fill"),
]
