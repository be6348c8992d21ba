"""WebSocket routes; the terminal adds its own here."""

from __future__ import annotations

websocket_urlpatterns: list = []
