"""Typed slurmrestd failures that carry Slurm's own words, and the rules that pick the type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Slurm errno values (slurm/slurm_errno.h) the console reacts to.
SLURM_ERROR = -1
EPERM = 1
SLURM_COMMUNICATIONS_ERRORS = range(1001, 1005)  # connection, send, receive, shutdown
SLURM_PROTOCOL_AUTHENTICATION_ERROR = 1007
SLURMCTLD_COMMUNICATIONS_ERRORS = range(1800, 1806)  # slurmctld unreachable, backoff, hard drop
ESLURM_INVALID_PARTITION_NAME = 2000
ESLURM_ACCESS_DENIED = 2002
ESLURM_JOB_SCRIPT_MISSING = 2009
ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE = 2015
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
SOCKET_ERRORS = range(5000, 5005)  # zero-length receive, short sends, incomplete packets, timeouts
SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT = 5005  # slurmctld hung up without a reply
ESLURM_AUTH_ERRORS = range(6000, 6100)
ESLURM_DB_CONNECTION = 7000
ESLURM_REST_FAIL_PARSING = 9001
ESLURM_REST_EMPTY_RESULT = 9003  # "Nothing found": an empty answer, not a failure
# Failures after slurmctld may already have received the request: the receive side of an RPC
# (1003, 1802), a reply cut short or never read (5000, 5001, 5003) and a socket timeout (5004).
# A connect or send failure (1001, 1800, 1801) means slurmctld never saw it.
ANSWER_LOST_ERRORS = frozenset({1003, 1802, 5000, 5001, 5003, 5004})

# Errno -1 with these words is all 22.05 says when a read RPC failed for any reason.
UNSPECIFIED = "unspecified error"
# A refused token costs slurmctld milliseconds; an unreachable slurmctld costs slurmrestd
# seconds of connect retries (9 s measured on 22.05.8) before the same -1 answer.
SLOW_ANSWER_SECONDS = 3.0

# Texts slurmrestd uses when it knows nothing more; never the most specific words.
GENERIC_TEXTS = frozenset(
    {"", "unspecified error", "request failed", "failure during parsing", "unknown error"}
)


@dataclass(frozen=True)
class SlurmErrorItem:
    """One entry of `errors[]`, from either shape slurmrestd emits.

    22.05's request parser and job submit write `{"error", "error_code"}`; the Slurm API
    calls (and every v0.0.39+ error) write `{"description", "error_number", "error", "source"}`.
    """

    code: int | None
    text: str
    source: str | None = None
    description: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> SlurmErrorItem:
        if not isinstance(raw, Mapping):
            return cls(code=None, text=str(raw))
        # 22.05's partitions and nodes handlers use a third key, `errno`.
        code = next((raw[k] for k in ("error_number", "error_code", "errno") if raw.get(k) is not None), None)
        try:
            code = int(code) if code is not None else None
        except (TypeError, ValueError):
            code = None
        text = str(raw.get("error") or "")
        description = raw.get("description")
        description = str(description) if description else None
        source = raw.get("source")
        if not text and description:
            # Entries such as hsearch_r's "Unknown key" carry only a description.
            text, description = description, None
        return cls(code=code, text=text, source=str(source) if source else None, description=description)

    @property
    def is_generic(self) -> bool:
        return self.specific_text().lower() in GENERIC_TEXTS

    def specific_text(self) -> str:
        """The description when it says more than the short text, e.g. which job could not be found."""
        if self.description and self.description.lower() not in GENERIC_TEXTS:
            return self.description
        return self.text

    def sentence(self) -> str:
        best = self.specific_text()
        extra = []
        if (
            self.text
            and self.text != best
            and self.text.lower() not in GENERIC_TEXTS
            and self.text not in best
        ):
            extra.append(self.text)
        if self.code not in (None, 0, SLURM_ERROR):
            extra.append(f"error {self.code}")
        return f"{best} ({', '.join(extra)})" if extra else best


def parse_error_items(raw: Any) -> tuple[SlurmErrorItem, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(SlurmErrorItem.parse(item) for item in raw)


def most_specific(items: Iterable[SlurmErrorItem]) -> SlurmErrorItem | None:
    """The first entry that says something of its own; parse wrappers like 9001 come last in Slurm's list."""
    items = list(items)
    for item in items:
        if not item.is_generic:
            return item
    return items[0] if items else None


class SlurmError(Exception):
    """slurmrestd refused or failed a request; `message` is Slurm's most specific text."""

    summary = "Slurm could not carry out the request."

    def __init__(
        self,
        message: str,
        status: int | None = None,
        errors: tuple[SlurmErrorItem, ...] = (),
        *,
        said_by_slurm: bool | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = tuple(errors)
        # Words from an answer are Slurm's; words about a missing or garbled answer are ours.
        self.said_by_slurm = (bool(errors) or status is not None) if said_by_slurm is None else said_by_slurm
        # True when the request may have been carried out although no usable answer came back
        # (a timeout after sending, a dropped connection, a gateway's 5xx): a submit may be queued.
        self.outcome_unknown = outcome_unknown

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(e.code for e in self.errors if e.code is not None)

    def __str__(self) -> str:
        if not self.message:
            return self.summary
        detail = self.message.rstrip(".")
        if self.said_by_slurm:
            return f"{self.summary} Slurm said: {detail}."
        return f"{self.summary} Details: {detail}."


class SlurmAuthError(SlurmError):
    summary = (
        "Slurm did not accept the console's credentials (the token may have expired, "
        "be signed with the wrong key, or name another user)."
    )


class SlurmPermissionDenied(SlurmError):
    summary = "Slurm does not allow this user to do that."


class SlurmNotFound(SlurmError):
    summary = "Slurm does not know that job or path (it forgets a job a few minutes after the job ends)."


class SlurmRejected(SlurmError):
    summary = "Slurm refused the request."


class SlurmUnavailable(SlurmError):
    summary = "The cluster's Slurm services did not answer; running jobs are not affected. Try again later."


class SlurmProtocolError(SlurmError):
    summary = "The console could not understand the Slurm REST service's answer."


def _has(codes: Iterable[int | None], wanted: Iterable[int] | int) -> bool:
    wanted_set = {wanted} if isinstance(wanted, int) else set(wanted)
    return any(c in wanted_set for c in codes)


def looks_like_refused_token(status: int, items: tuple[SlurmErrorItem, ...]) -> bool:
    """22.05's answer to a read RPC slurmctld did not carry out: HTTP 5xx, only errno -1 "Unspecified error".

    slurmrestd 22.05 does not verify the JWT; it forwards it, slurmctld refuses the RPC
    (expired, wrong key, garbage, no `exp`, no `sun`, HS512, user mismatch) and the read
    handlers (ping, diag, jobs, job, partitions, nodes) only report SLURM_ERROR, each with
    its own description ("request failed", "Failed while looking for jobs", even "Unable
    to find JobId=1"). A request slurmctld did process and refuse carries its own errno
    (2000, 2002, 2017, …), and a 400 with that entry beside a parser message is a bad
    field. The same -1 shape also comes when slurmctld cannot be reached at all, so
    `error_for` tells the two apart by how long the answer took.
    """
    if status < 500 or not items:
        return False
    return all(item.code in (None, SLURM_ERROR) and item.text.lower() == UNSPECIFIED for item in items)


def error_for(
    status: int,
    items: tuple[SlurmErrorItem, ...] = (),
    text: str = "",
    *,
    elapsed: float | None = None,
) -> SlurmError:
    """The typed error for one failed answer: codes first, then the HTTP status, then the body's shape.

    `elapsed` (seconds the answer took) separates a refused token from an unreachable
    slurmctld where 22.05 gives both the same body. A 5xx is `outcome_unknown` when
    Slurm's own words do not say the request failed before slurmctld had it: a body that
    is not slurmrestd's (a proxy or load balancer may have forwarded the request before
    it gave up) or one of the ANSWER_LOST_ERRORS.
    """
    error = _classify(status, items, text, elapsed)
    error.outcome_unknown = status >= 500 and (not items or _has((i.code for i in items), ANSWER_LOST_ERRORS))
    return error


def _classify(status: int, items: tuple[SlurmErrorItem, ...], text: str, elapsed: float | None) -> SlurmError:
    best = most_specific(items)
    message = best.sentence() if best else text.strip()
    codes = [i.code for i in items]

    if status == 401 or status == 511 or _has(codes, SLURM_PROTOCOL_AUTHENTICATION_ERROR):
        return SlurmAuthError(message or "Authentication failure", status, items)
    if _has(codes, ESLURM_AUTH_ERRORS) or _has(codes, SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT):
        # 22.05's submit and kill see a refused token as slurmctld hanging up (5005), while
        # an unreachable slurmctld is 1800 there.
        return SlurmAuthError(message, status, items)
    if _has(codes, (ESLURM_ACCESS_DENIED, EPERM)) or status == 403:
        return SlurmPermissionDenied(message, status, items)
    if _has(codes, ESLURM_INVALID_JOB_ID):
        return SlurmNotFound(message, status, items)
    if (
        _has(codes, SLURMCTLD_COMMUNICATIONS_ERRORS)
        or _has(codes, SLURM_COMMUNICATIONS_ERRORS)
        or _has(codes, SOCKET_ERRORS)
        or _has(codes, ESLURM_DB_CONNECTION)
        or status in (502, 503, 504)
    ):
        return SlurmUnavailable(message or f"HTTP {status}", status, items)
    if looks_like_refused_token(status, items):
        if elapsed is not None and elapsed >= SLOW_ANSWER_SECONDS:
            return SlurmUnavailable(
                f"slurmrestd could not get an answer from slurmctld in {elapsed:.0f} s ({message})",
                status,
                items,
                said_by_slurm=False,
            )
        return SlurmAuthError(message, status, items)
    if status == 404:
        return SlurmNotFound(message or "HTTP 404", status, items)
    if items and any(not i.is_generic or i.code not in (None, SLURM_ERROR) for i in items):
        # slurmctld or the request parser looked at the request and said no.
        return SlurmRejected(message, status, items)
    if status in (400, 415, 422):
        return SlurmRejected(message or f"HTTP {status}", status, items)
    if message:
        return SlurmProtocolError(message, status, items)
    return SlurmProtocolError(f"unexpected HTTP {status} with no explanation", status, said_by_slurm=False)
