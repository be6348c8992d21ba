"""The terminal's pages: the terminal itself, and recordings for administrators."""

from __future__ import annotations

from django.urls import path

from terminal import views

app_name = "terminal"

urlpatterns = [
    path("clusters/<slug:slug>/terminal/", views.terminal, name="page"),
    path("terminal/sessions/<int:pk>/replay/", views.replay, name="replay"),
    path("terminal/sessions/<int:pk>/recording.cast", views.recording, name="recording"),
]
