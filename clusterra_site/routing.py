"""WebSocket routes; the terminal adds its own here."""

from __future__ import annotations

from django.urls import path

from terminal.consumer import TerminalConsumer

websocket_urlpatterns: list = [
    path("ws/clusters/<slug:slug>/terminal/", TerminalConsumer.as_asgi(), name="terminal-socket"),
]
