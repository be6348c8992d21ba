"""Django middleware of the console's own, where Django's does more per request than the request needs."""

from __future__ import annotations

from typing import Any

from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject, empty


class MessagesWhenUsed(MessageMiddleware):
    """Django's messages, with their storage made only when a message is added or read.

    Django makes it for every request, and making it signs nothing but still builds a cookie signer
    (~4 % of a worker's CPU under the mixed load); /v1, the live list's feed and the health check never
    show a message. A page renders base.html, which reads them, and then they are saved as before.
    """

    def process_request(self, request: HttpRequest) -> None:
        request._messages = SimpleLazyObject(lambda: default_storage(request))  # type: ignore[attr-defined]

    def process_response(self, request: HttpRequest, response: HttpResponse) -> Any:
        storage = getattr(request, "_messages", None)
        if isinstance(storage, SimpleLazyObject) and storage._wrapped is empty:
            return response
        return super().process_response(request, response)
