"""Talking to /v1: one request function, the console's error sentences, and exit codes scripts can rely on."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

# Exit codes (documented in `clusterra --help`).
OK = 0
FAILED = 1  # the console refused the request (400, 409, …); its message says why
USAGE = 2  # wrong arguments (argparse's own code)
NOT_SIGNED_IN = 3  # no token, or the console refused it (401)
DENIED = 4  # the policy said no (403); the decision's sentence is printed
NOT_FOUND = 5  # no such cluster or job (404)
CLUSTER_DOWN = 6  # the cluster did not answer (502, 503, 504)
UNREACHABLE = 7  # the console itself could not be reached, or is not a Clusterra console

EXIT_CODES = {
    OK: "success",
    FAILED: "the console refused the request (the message says why)",
    USAGE: "wrong arguments",
    NOT_SIGNED_IN: "not signed in, or the API token was refused: run `clusterra login`",
    DENIED: "not allowed: the policy's sentence is printed",
    NOT_FOUND: "no such cluster or job",
    CLUSTER_DOWN: "the cluster did not answer; try again later",
    UNREACHABLE: "the console could not be reached",
}
TIMEOUT = (10, 120)
# A 429 says how long to wait (Retry-After); the CLI waits that long once, up to this many seconds, since
# a throttled request was never acted on. A longer wait is the person's call: the message says how long.
MAX_RATE_WAIT = 30
_sleep = time.sleep


@dataclass
class ApiFailure(Exception):
    """A request that did not succeed; `exit_code` for the shell, `message` for the person."""

    exit_code: int
    message: str
    status: int | None = None
    code: str = ""
    body: Any = None
    retry_after: int | None = None  # the seconds a 429 asked to wait, for commands that keep polling

    def __str__(self) -> str:
        return self.message


def exit_code_for(status: int) -> int:
    if status == 401:
        return NOT_SIGNED_IN
    if status == 403:
        return DENIED
    if status == 404:
        return NOT_FOUND
    if status in (502, 503, 504):
        return CLUSTER_DOWN
    return FAILED


class Client:
    def __init__(self, url: str, token: str, *, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session = session or requests.Session()
        # Only what the person configured: no proxy or .netrc credentials from the environment.
        self.session.trust_env = False

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        retry: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a successful call; ApiFailure otherwise.

        `retry` repeats a call once when the connection failed or the console answered
        5xx; only for reads and for submits that carry an Idempotency-Key.
        """
        if not self.token:
            raise ApiFailure(NOT_SIGNED_IN, f"Not signed in to {self.url}: run `clusterra login` first.")
        all_headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        all_headers.update(headers or {})
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        attempts = 2 if retry else 1
        waited = False
        attempt = 0
        while attempt < attempts:
            attempt += 1
            try:
                answer = self.session.request(
                    method,
                    f"{self.url}/v1{path}",
                    params=clean,
                    json=body,
                    headers=all_headers,
                    timeout=TIMEOUT,
                )
            except requests.RequestException as e:
                if attempt < attempts:
                    continue
                raise ApiFailure(
                    UNREACHABLE, f"The console at {self.url} does not answer ({_reason(e)})."
                ) from None
            if answer.status_code >= 500 and attempt < attempts:
                continue
            wait = _retry_after(answer)
            if wait is not None and wait <= MAX_RATE_WAIT and not waited:
                waited = True
                attempt -= 1  # the throttled call was refused before anything happened: it is not an attempt
                _sleep(wait)
                continue
            return self._parse(answer)
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, answer: requests.Response) -> tuple[int, dict[str, Any]]:
        try:
            body = answer.json()
        except ValueError:
            raise ApiFailure(
                UNREACHABLE,
                f"{self.url} answered HTTP {answer.status_code}, but not like a Clusterra console.",
                answer.status_code,
            ) from None
        if answer.status_code < 400:
            return answer.status_code, body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") or f"HTTP {answer.status_code}"
        raise ApiFailure(
            exit_code_for(answer.status_code),
            message,
            answer.status_code,
            error.get("code", ""),
            body,
            _retry_after(answer),
        )

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params, retry=True)[1]


def _retry_after(answer: requests.Response) -> int | None:
    """The seconds a 429 asks to wait, or None (another status, or no usable Retry-After)."""
    if answer.status_code != 429:
        return None
    try:
        return max(0, int(answer.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _reason(error: Exception) -> str:
    inner: BaseException = error
    for _ in range(10):
        if inner.__context__ is None:
            break
        inner = inner.__context__
    return (str(inner) or type(inner).__name__)[:200]
