"""Watching a job from the terminal: asking again with back-off until it ends, its exit status for the shell,
and which part of its output is new since the last read."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from clusterra_cli.client import CLUSTER_DOWN, UNREACHABLE, ApiFailure

# Slurm's words for a job that will not run again (the console's list); anything else may still change.
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)

# `clusterra job wait` exits with the job's own exit code; these stand for endings that have none. A job
# can exit with any of these numbers itself: the printed line (or --json) tells the two apart.
JOB_FAILED = 120
JOB_CANCELLED = 121
JOB_TIMED_OUT = 122
WAIT_TIMED_OUT = 124  # the number timeout(1) uses
SIGNAL_BASE = 128  # killed by signal S: 128 + S, as a shell reports it

WAIT_EXIT_CODES = {
    "N": "the job ended with exit code N (0 when it COMPLETED)",
    f"{SIGNAL_BASE}+S": "the job was killed by signal S and has no exit code",
    str(JOB_FAILED): "the job ended FAILED (or NODE_FAIL, OUT_OF_MEMORY, …) with no exit code or signal",
    str(JOB_CANCELLED): "the job was cancelled",
    str(JOB_TIMED_OUT): "the job reached its time limit (TIMEOUT)",
    str(WAIT_TIMED_OUT): "--timeout passed before the job ended; it goes on",
    "1-7": "the command itself failed, as for every command (see `clusterra --help`)",
}

FIRST_PAUSE = 1.0
GROWTH = 1.5
LONGEST_PAUSE = 30.0

# Read through module attributes so tests can run the clock fast.
_sleep = time.sleep
_now = time.monotonic

T = TypeVar("T")


def has_ended(job: dict[str, Any]) -> bool:
    return job.get("state") in ENDED_STATES


def exit_status(job: dict[str, Any]) -> int:
    """The number `clusterra job wait` exits with for an ended job (WAIT_EXIT_CODES says which)."""
    state, code, signal = job.get("state"), job.get("exit_code"), job.get("exit_signal")
    if state == "CANCELLED":
        return JOB_CANCELLED
    if state == "TIMEOUT":
        return JOB_TIMED_OUT
    if code is not None and (code != 0 or state == "COMPLETED"):
        return code
    if signal:
        return SIGNAL_BASE + signal
    # Never 0 for a job that did not complete, even when Slurm recorded a status of 0 for it.
    return JOB_FAILED


class TimeUp(Exception):
    """The caller's deadline passed."""


class Poller:
    """Asks the console again and again, further apart each time, never past a deadline.

    A throttled answer (429) is waited out for as long as its Retry-After says, and a console
    or cluster that does not answer is asked again later: a wait outlives a console restart.
    """

    def __init__(
        self, timeout: float | None = None, *, longest: float = LONGEST_PAUSE, say: Callable[[str], None]
    ) -> None:
        self.deadline = None if timeout is None else _now() + timeout
        self.longest = longest
        self.pause = FIRST_PAUSE
        self.say = say
        self._said: set[str] = set()

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - _now()

    def ask(self, call: Callable[[], T]) -> T:
        while True:
            try:
                return call()
            except ApiFailure as e:
                if e.status == 429:
                    wait = e.retry_after if e.retry_after is not None else self._next()
                elif e.exit_code in (UNREACHABLE, CLUSTER_DOWN):
                    wait = self._next()
                    if e.message not in self._said:
                        self._said.add(e.message)
                        self.say(f"{e.message} Asking again; Ctrl-C stops.")
                else:
                    raise
                left = self.left()
                if left is not None and wait >= left:
                    # Asking before Retry-After has passed would only be refused again.
                    _sleep(max(left, 0))
                    raise TimeUp from None
                _sleep(wait)

    def wait(self) -> None:
        """Pause before the next question; TimeUp once the deadline has passed."""
        pause = self._next()
        left = self.left()
        if left is not None:
            if left <= 0:
                raise TimeUp
            pause = min(pause, left)
        _sleep(pause)

    def again_soon(self) -> None:
        """Something changed: the next pause is short again."""
        self.pause = FIRST_PAUSE

    def _next(self) -> float:
        pause = self.pause
        self.pause = min(self.pause * GROWTH, self.longest)
        return pause


class Follower:
    """What of a growing output file has not been printed yet, from successive reads of its last lines.

    The output route answers with the file's last lines only (no offset). While the file is
    shorter than what one answer holds, each read is the whole file and the new part is what
    follows the previous read. Past that, each read is a window on the file's end, and the new
    part is what follows the longest overlap between the previous window's end and this one's
    start: exact unless the file repeats itself for a whole window, or grew by more than a
    window between two reads (then `skipped` is set and the whole window is printed).
    """

    def __init__(self, first_lines: int | None) -> None:
        self.first_lines = first_lines  # the first read prints its last lines only (None: all of it)
        self.seen: str | None = None
        self.seen_whole = False
        self.skipped = False

    def feed(self, text: str, *, whole: bool) -> str:
        seen, self.seen = self.seen, text
        seen_whole, self.seen_whole = self.seen_whole, whole
        self.skipped = False
        if seen is None:
            if self.first_lines is None:
                return text
            return "".join(text.splitlines(keepends=True)[-self.first_lines :]) if self.first_lines else ""
        if text.startswith(seen):
            return text[len(seen) :]
        if seen_whole and whole:
            # Both reads were the whole file and the new one does not go on from the old: it was rewritten.
            return text
        shared = overlap(seen, text)
        self.skipped = shared == 0 and bool(seen) and bool(text)
        return text[shared:]


def overlap(before: str, after: str) -> int:
    """The length of the longest end of `before` that `after` starts with (Knuth-Morris-Pratt, linear)."""
    if not before or not after:
        return 0
    border = [0] * len(after)
    k = 0
    for i in range(1, len(after)):
        while k and after[i] != after[k]:
            k = border[k - 1]
        if after[i] == after[k]:
            k += 1
        border[i] = k
    k = 0
    for char in before[-len(after) :]:
        while k and (k == len(after) or char != after[k]):
            k = border[k - 1]
        if char == after[k]:
            k += 1
    return k
