"""A refusal: why a request does not go ahead, as a stable code, a sentence for the person and an HTTP status.

Every door shows it the same way: /v1 answers `{"error": {"code", "message"}}` with `status`, a page
shows `message`, the terminal closes with `code`. It lives at the lowest floor, free of Django, so
every app raises it (or a subclass that carries more, such as the decision behind it).
"""

from __future__ import annotations

from collections.abc import Mapping


class Refusal(Exception):
    """The request stops here; `message` says why and what to do next, `code` is stable for programs."""

    def __init__(
        self, message: str, *, code: str, status: int = 400, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # What an HTTP answer needs besides the body: Allow on a 405, WWW-Authenticate on a 401.
        self.headers = dict(headers or {})
