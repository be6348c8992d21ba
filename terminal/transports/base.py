"""The interface every terminal transport (SSM data channel, local PTY) offers to the terminal consumer."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from clusters import paths


class TransportError(Exception):
    """A terminal could not be opened or kept open; the message is fit to show the person."""


def check_cwd(cwd: str | None) -> str:
    """The directory a shell starts in, as given, or "" for home; ValueError says what is wrong with it."""
    if not cwd:
        return ""
    try:
        return paths.check(cwd)
    except paths.NotAHeadNodePath as e:
        raise ValueError(
            {
                paths.NUL: "the working directory contains a control character",
                paths.CONTROL: "the working directory contains a control character",
                paths.TOO_LONG: f"the working directory is longer than {paths.MAX_LENGTH} characters",
                paths.RELATIVE: f"the working directory must be an absolute path: {cwd!r}",
                paths.NOT_NORMALISED: f"the working directory {cwd!r} is not normalised (no '.', '..', '//' "
                f"or trailing '/'); write {e.normalised!r} if that is what you mean",
            }[e.rule]
        ) from None


class Transport(abc.ABC):
    """One remote shell: bytes in, bytes out, a size, and an end with a reason.

    Implementations forward every chunk as soon as it arrives; coalescing for the
    browser, if any, is the consumer's business.
    """

    session_id: str = ""
    # None while the shell runs; afterwards why it ended, in words a person can read.
    ended_reason: str | None = None

    @abc.abstractmethod
    async def start(self, cols: int, rows: int) -> None:
        """Open the shell with this terminal size; raise TransportError if it cannot be opened."""

    @abc.abstractmethod
    async def send(self, data: bytes) -> None:
        """Deliver keystrokes; never drops them while the session lives."""

    @abc.abstractmethod
    async def resize(self, cols: int, rows: int) -> None:
        """Tell the remote PTY its new size."""

    @abc.abstractmethod
    def output(self) -> AsyncIterator[bytes]:
        """Terminal output, chunk by chunk; the iteration ends when the remote side ends."""

    @abc.abstractmethod
    async def close(self, reason: str) -> None:
        """End the shell for good (idempotent); `reason` is the ended_reason unless the remote ended first."""
