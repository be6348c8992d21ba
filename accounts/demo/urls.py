"""The demo's URLs, mounted at /demo/ by clusterra_site.urls."""

from __future__ import annotations

from django.urls import path

from accounts.demo import views

app_name = "demo"

urlpatterns = [
    path("", views.start, name="start"),
    path("sent/", views.sent, name="sent"),
    path("join/", views.join, name="join"),
    path("link/<str:token>/", views.link, name="link"),
]
