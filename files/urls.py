"""The file pages of a cluster: the person's home, browsed, edited, filled and emptied through the browser."""

from __future__ import annotations

from django.urls import path

from files import views

app_name = "files"

urlpatterns = [
    path("clusters/<slug:slug>/files/", views.browse, name="browse"),
    path("clusters/<slug:slug>/files/edit", views.edit, name="edit"),
    path("clusters/<slug:slug>/files/new", views.new, name="new"),
    path("clusters/<slug:slug>/files/upload", views.upload, name="upload"),
    path("clusters/<slug:slug>/files/download", views.download, name="download"),
]
