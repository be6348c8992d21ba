"""The one rule for "an absolute path on the head node": what a script path or a working directory must be.

The path is judged as text, before anything is touched on the head node: absolute, already
normalised (no `.`, `..`, `//` or trailing `/`: what is checked is what is used), no NUL or other
control character (a NUL ends the C string the head node reads; CR and LF would split a log line or
a command), and no longer than PATH_MAX. Callers say in their own words which rule was broken.
"""

from __future__ import annotations

import posixpath

MAX_LENGTH = 4096

# The rules, in the order they are checked: a caller's sentence for each is keyed by these.
NUL = "nul"
CONTROL = "control"
TOO_LONG = "too_long"
RELATIVE = "relative"
NOT_NORMALISED = "not_normalised"


class NotAHeadNodePath(ValueError):
    """`value` breaks `rule` (one of the names above)."""

    def __init__(self, rule: str, value: str) -> None:
        super().__init__(f"{value!r} is not an absolute, normalised path ({rule})")
        self.rule = rule
        self.value = value

    @property
    def normalised(self) -> str:
        """What the caller probably meant, for a sentence that suggests it."""
        return posixpath.normpath(self.value)


def check(value: str) -> str:
    """`value` itself when it is an absolute, normalised, plain path; NotAHeadNodePath otherwise."""
    if "\x00" in value:
        raise NotAHeadNodePath(NUL, value)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise NotAHeadNodePath(CONTROL, value)
    if len(value) > MAX_LENGTH:
        raise NotAHeadNodePath(TOO_LONG, value)
    if not value.startswith("/"):
        raise NotAHeadNodePath(RELATIVE, value)
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise NotAHeadNodePath(NOT_NORMALISED, value)
    return value
