"""The files the console shares with a head node's job_submit plugin: the policy, and the refusal log.

Both go through the head-node channel (`headnode.run`), so an SSM head node is served like
the local one. The policy is written beside its final name and renamed over it: the plugin
opens the file on every submit and must only ever see a whole snapshot.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets

from clusters import headnode
from clusters.headnode import HeadNode, HeadNodeError

# Refusals read in one round at most; the rest waits for the next one.
READ_LIMIT = 1_000_000


class PolicyFileError(Exception):
    """The head node did not take the file (or did not give the log back); the message says why."""


def write_policy(cluster: HeadNode, path: str, text: str, *, group: str) -> None:
    """Replace `path` on the head node with `text`, readable by `group` (SlurmUser's) and root only."""
    folder = posixpath.dirname(path)
    partial = f"{path}.{secrets.token_hex(4)}.new"
    steps = [
        (["install", "-d", "-m", "0750", "-o", "root", "-g", group, folder], None),
        (["install", "-m", "0640", "-o", "root", "-g", group, "/dev/stdin", partial], text.encode()),
        (["mv", "-f", "-T", partial, path], None),
    ]
    for argv, data in steps:
        try:
            result = headnode.run(cluster, argv, input=data, timeout=30)
        except HeadNodeError as e:
            raise PolicyFileError(str(e)) from None
        if not result.ok:
            if argv[0] == "mv":
                _run_quietly(cluster, ["rm", "-f", partial])
            raise PolicyFileError(f"{argv[0]} on the head node failed: {result.output()}")


def log_size(cluster: HeadNode, path: str) -> int:
    """How long the refusal log is now (0 if it is not there yet or cannot be read)."""
    try:
        size = headnode.run(cluster, ["stat", "-c", "%s", path], timeout=15)
    except HeadNodeError:
        return 0
    text = size.stdout.strip()
    return int(text) if size.ok and text.isdigit() else 0


def read_refusals(cluster: HeadNode, path: str, offset: int) -> tuple[bytes, int]:
    """New bytes of the plugin's refusal log since `offset`, and the offset to start from next time.

    A log that is now shorter than `offset` was rotated: it is read from its start.
    """
    try:
        size = headnode.run(cluster, ["stat", "-c", "%s", path], timeout=15)
    except HeadNodeError as e:
        raise PolicyFileError(str(e)) from None
    if not size.ok:
        return b"", 0  # no refusal yet: the plugin makes the file with its first
    try:
        length = int(size.stdout.strip())
    except ValueError:
        raise PolicyFileError(f"stat gave no size for {path}: {size.output()}") from None
    if length < offset:
        offset = 0
    if length == offset:
        return b"", offset
    count = min(length - offset, READ_LIMIT)
    try:
        chunk = headnode.run(
            cluster,
            ["tail", "-c", f"+{offset + 1}", path],
            timeout=30,
        )
    except HeadNodeError as e:
        raise PolicyFileError(str(e)) from None
    if not chunk.ok:
        raise PolicyFileError(f"tail on the head node failed: {chunk.output()}")
    data = chunk.stdout.encode()[:count]
    # Only whole lines: a line the plugin is still writing is read next round.
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def read_tail(cluster: HeadNode, path: str, size: int = 65536) -> bytes:
    """The last `size` bytes of the refusal log (whole lines only); empty if it cannot be read."""
    try:
        result = headnode.run(cluster, ["tail", "-c", str(size), path], timeout=15)
    except HeadNodeError:
        return b""
    if not result.ok:
        return b""
    data = result.stdout.encode()
    start = data.find(b"\n") + 1 if len(data) >= size else 0
    return data[start:]


def _run_quietly(cluster: HeadNode, argv: list[str]) -> None:
    with contextlib.suppress(HeadNodeError):
        headnode.run(cluster, argv, timeout=15)
