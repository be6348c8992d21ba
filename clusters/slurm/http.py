"""The HTTP transport every adapter shares: pooled sessions, timeouts, one safe retry, envelope parsing."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from clusters.slurm.errors import (
    ESLURM_REST_EMPTY_RESULT,
    SlurmErrorItem,
    SlurmProtocolError,
    SlurmUnavailable,
    error_for,
    parse_error_items,
)
from clusters.turns import waiting_elsewhere

log = logging.getLogger("clusters.slurm")

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
# A proxy's HTML error page can be long; a person needs only its first words.
MAX_TEXT_IN_ERROR = 300

Timeout = float | tuple[float, float]

_local = threading.local()


def session_for(base_url: str) -> requests.Session:
    """This thread's session for one slurmrestd, so keep-alive connections are reused.

    Sessions are per thread because requests.Session is not documented as thread-safe,
    and per base URL (not per user) because the auth headers go on each request.
    """
    sessions: dict[str, requests.Session] | None = getattr(_local, "sessions", None)
    if sessions is None:
        sessions = _local.sessions = {}
    session = sessions.get(base_url)
    if session is None:
        session = requests.Session()
        # No proxies from the environment and no ~/.netrc: slurmrestd sits on a private
        # network, and netrc would add an Authorization header next to the Slurm token.
        session.trust_env = False
        sessions[base_url] = session
    return session


def close_sessions() -> None:
    """Close this thread's sessions (tests, or a worker that is shutting down)."""
    sessions: dict[str, requests.Session] = getattr(_local, "sessions", None) or {}
    for session in sessions.values():
        session.close()
    sessions.clear()


def normalise_timeout(timeout: Timeout | None) -> tuple[float, float]:
    if timeout is None:
        return (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)
    if isinstance(timeout, (int, float)):
        return (float(timeout), float(timeout))
    connect, read = timeout
    return (float(connect), float(read))


@dataclass(frozen=True)
class SlurmResponse:
    """A successful answer. `errors` can be non-empty on HTTP 200 (a submit with 2015 still queues)."""

    status: int
    data: Mapping[str, Any] = field(default_factory=dict)
    errors: tuple[SlurmErrorItem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    def raise_for_errors(self) -> None:
        """For answers whose `errors[]` must be empty to be trusted (all but a submit with a job id)."""
        if self.errors:
            raise error_for(self.status, self.errors)

    def error_sentences(self) -> tuple[str, ...]:
        return tuple(e.sentence() for e in self.errors)


def _warnings(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    result = []
    for item in raw:
        if isinstance(item, Mapping):
            words = item.get("description") or item.get("warning") or ""
        else:
            words = str(item)
        if words:
            result.append(str(words))
    return tuple(result)


class Transport:
    """Sends one request to one slurmrestd with fixed auth headers and returns the parsed envelope."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        timeout: Timeout | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self.timeout = normalise_timeout(timeout)

    def __repr__(self) -> str:
        # Never the headers: they hold the token.
        return f"<Transport {self.base_url}>"

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> SlurmResponse:
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> SlurmResponse:
        response = self._send(method, path, params, body)
        return self._parse(method, path, response)

    def _send(self, method: str, path: str, params: Mapping[str, Any] | None, body: Any) -> requests.Response:
        url = self.base_url + path
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        headers.setdefault("Accept", "application/json")
        # Only reads are retried: a submit that reached slurmctld before the connection
        # broke must not queue the job twice.
        attempts = 2 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                with waiting_elsewhere():
                    response = session_for(self.base_url).request(
                        method,
                        url,
                        params=params,
                        data=data,
                        headers=headers,
                        timeout=self.timeout,
                        allow_redirects=False,
                    )
            except requests.Timeout as e:
                self._log(method, path, "timeout", started)
                raise SlurmUnavailable(
                    f"no answer from {self.base_url} within {self._timeout_words(e)}",
                    None,
                    outcome_unknown=not isinstance(e, requests.ConnectTimeout),
                ) from e
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                self._log(method, path, "connection error", started)
                if attempt < attempts:
                    # A pooled keep-alive connection can die with the slurmrestd that held it
                    # (a restart); the retry goes out on a new one.
                    log.info("retrying %s %s once after a connection error", method, path)
                    continue
                if _maybe_sent(e):
                    raise SlurmUnavailable(
                        f"the connection to {self.base_url} broke before an answer came ({_reason(e)})",
                        None,
                        outcome_unknown=True,
                    ) from e
                raise SlurmUnavailable(f"cannot reach {self.base_url} ({_reason(e)})", None) from e
            except requests.RequestException as e:
                self._log(method, path, "failed", started)
                raise SlurmUnavailable(
                    f"request to {self.base_url} failed ({_reason(e)})", None, outcome_unknown=_maybe_sent(e)
                ) from e
            self._log(method, path, response.status_code, started)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout_words(self, error: requests.Timeout) -> str:
        connect, read = self.timeout
        if isinstance(error, requests.ConnectTimeout):
            return f"{connect:g} s (connecting)"
        return f"{read:g} s"

    @staticmethod
    def _log(method: str, path: str, outcome: int | str, started: float) -> None:
        log.debug("%s %s -> %s in %.1f ms", method, path, outcome, (time.monotonic() - started) * 1000)

    def _parse(self, method: str, path: str, response: requests.Response) -> SlurmResponse:
        status = response.status_code
        if status == 304:
            return SlurmResponse(status)
        raw = response.content or b""
        data: Any = None
        if raw.strip():
            content_type = response.headers.get("Content-Type", "")
            if "json" in content_type or raw.lstrip()[:1] in (b"{", b"["):
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
        body_text = "" if data is not None else _plain(raw.decode("utf-8", "replace"))[:MAX_TEXT_IN_ERROR]
        errors: tuple[SlurmErrorItem, ...] = ()
        warnings: tuple[str, ...] = ()
        if isinstance(data, Mapping):
            errors = tuple(
                e for e in parse_error_items(data.get("errors")) if e.code != ESLURM_REST_EMPTY_RESULT
            )
            warnings = _warnings(data.get("warnings"))
        if status >= 300:
            raise error_for(status, errors, body_text, elapsed=response.elapsed.total_seconds())
        # A success status with a body the console cannot read: whatever was asked may have been done.
        if data is None:
            if not raw.strip():
                return SlurmResponse(status, {}, (), ())
            raise SlurmProtocolError(
                f"{method} {path} answered HTTP {status} with {body_text!r}",
                status,
                said_by_slurm=False,
                outcome_unknown=True,
            )
        if not isinstance(data, Mapping):
            raise SlurmProtocolError(
                f"{method} {path} answered HTTP {status} with a JSON {type(data).__name__}",
                status,
                said_by_slurm=False,
                outcome_unknown=True,
            )
        return SlurmResponse(status, data, errors, warnings)


def _plain(body: str) -> str:
    """A proxy's HTML error page as the words a person would read on it."""
    if body.lstrip()[:1] == "<":
        body = re.sub(r"<[^>]*>", " ", body)
    return " ".join(body.split())


def _maybe_sent(error: requests.RequestException) -> bool:
    """Whether the request may have reached slurmrestd: only a failure to connect proves it did not."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema)):
        return False
    if isinstance(error, requests.exceptions.MissingSchema):
        return False
    inner: BaseException | None = error.args[0] if error.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError):
        inner = inner.reason
    return not isinstance(inner, urllib3.exceptions.NewConnectionError)


def _reason(error: Exception) -> str:
    # requests nests the socket error a few levels down; the innermost words are the useful ones.
    inner: BaseException = error
    for _ in range(10):
        if inner.__context__ is None:
            break
        inner = inner.__context__
    words = str(inner) or type(inner).__name__
    return words[:MAX_TEXT_IN_ERROR]
