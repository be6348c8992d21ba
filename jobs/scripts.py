"""Job scripts by path: which paths the console accepts, and reading one as its owner on the head node.

Decisions:

- A path is checked as text first: absolute, already normalised (no `.`, `..`, `//` or
  trailing `/`), no NUL or other control character, and under one of the cluster's
  `script_roots`. Nothing is touched for a path that fails.
- The file is then read **as the person's POSIX user** on the head node, so the answer is
  the one sbatch would get: a script they cannot read is refused by the kernel, not by a
  rule of ours. Remotely (SSM) through `runuser -u NAME`; on this host (the local
  transport) by the console's long-lived reader, which takes on the person's uid, gid and
  supplementary groups as its file-system identity for each read, so no process is started per
  submit (clusters.reader; `setpriv` through clusters.headnode.as_user where it cannot run).
- Symbolic links are followed, as sbatch follows them, but the **resolved** path must
  also be under a root: a link in the home folder pointing at `/etc/…` is refused.
  The resolution happens as the user in the same command that reads, so the check and
  the read see the same file.
- Only regular files are read (a FIFO would hang the read), at most `CLUSTERRA_MAX_SCRIPT_BYTES`,
  and the script must start with `#!` as sbatch requires: Slurm would accept one
  without and the job would fail at launch.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from django.conf import settings

from clusters import headnode, paths, reader
from clusters.models import Cluster
from clusters.refusal import Refusal

READ_TIMEOUT = 20.0

# Run as the user as `sh -c READER sh PATH LIMIT` (see _as_user): the shell text is fixed
# and the path arrives as "$1", so no value is ever pasted into shell code. It prints the
# resolved path, a NUL, then the first LIMIT bytes of the file.
READER = (
    'resolved=$(realpath -e -- "$1") || exit 3; '
    '[ -f "$resolved" ] || { echo "$resolved is not a regular file" >&2; exit 4; }; '
    '[ -r "$resolved" ] || { echo "cannot open $resolved: Permission denied" >&2; exit 5; }; '
    "printf '%s\\0' \"$resolved\"; "
    'exec head -c "$2" -- "$resolved"'
)
# `test -d` and `test -x` as the user: the working directory must be one they can enter.
DIRECTORY_CHECK = '[ -d "$1" ] || exit 3; [ -x "$1" ] || exit 5; exit 0'
# READER after DIRECTORY_CHECK's question about "$3", as `sh -c READ_WITH_DIRECTORY sh PATH LIMIT DIR`:
# a remote head node answers both in one command (one SSM round trip a submit). It prints the check's
# code (0, 3 or 5) and a NUL, then what READER prints; the exit code is READER's.
READ_WITH_DIRECTORY = (
    'if [ -d "$3" ]; then if [ -x "$3" ]; then printf 0; else printf 5; fi; else printf 3; fi; '
    "printf '\\0'; " + READER
)


class ScriptError(Refusal):
    """The script (or a path given with it) cannot be used; `status` is the HTTP status that fits."""


@dataclass(frozen=True)
class Script:
    """A job script: read from `path` on the cluster, or sent inline (`path` empty, `home` its folder)."""

    path: str
    resolved_path: str
    text: str
    home: str = ""

    @property
    def folder(self) -> str:
        """Where the job runs unless it says otherwise: the script's folder, as for sbatch run beside it."""
        return posixpath.dirname(self.path) if self.path else self.home

    @property
    def label(self) -> str:
        return self.path or "the inline script"


def inline(cluster: Cluster, username: str, text: object) -> Script:
    """A script sent in the request itself; it runs in the person's home unless it says --chdir."""
    if not isinstance(text, str):
        raise ScriptError("script must be the text of the job script.", code="invalid_request")
    check_text(text, "The inline script")
    return Script(path="", resolved_path="", text=text, home=posixpath.join(cluster.home_root, username))


def check_text(text: str, label: str) -> None:
    """What sbatch would refuse, and what is too big to be a script, refused before anything is sent."""
    limit = max_script_bytes()
    if len(text.encode()) > limit:
        raise ScriptError(
            f"{label} is larger than {limit // 1024} KiB; "
            "a job script should be small (put data in other files).",
            code="script_too_large",
        )
    if not text.strip():
        raise ScriptError(f"{label} is empty.", code="script_invalid")
    if "\x00" in text or "\ufffd" in text:
        raise ScriptError(
            f"{label} is not a text file (it has binary or non-UTF-8 bytes).", code="script_invalid"
        )
    if not text.startswith("#!"):
        raise ScriptError(
            f"{label} does not start with '#!' (for example #!/bin/bash); sbatch refuses such a script too.",
            code="script_invalid",
        )


def max_script_bytes() -> int:
    return settings.CLUSTERRA_MAX_SCRIPT_BYTES


def check_path(value: object, *, what: str = "script_path") -> str:
    """An absolute, normalised path with no NUL or control character; ScriptError otherwise."""
    if not isinstance(value, str) or not value:
        raise ScriptError(
            f"{what} is required: the absolute path of a file on the cluster.", code="invalid_path"
        )
    try:
        return paths.check(value)
    except paths.NotAHeadNodePath as e:
        sentence = {
            paths.NUL: f"{what} contains a NUL byte.",
            paths.CONTROL: f"{what} contains a control character.",
            paths.TOO_LONG: f"{what} is longer than {paths.MAX_LENGTH} characters.",
            paths.RELATIVE: f"{what} must be an absolute path (starting with /), not {value!r}.",
            paths.NOT_NORMALISED: f"{what} {value!r} is not normalised (no '.', '..', '//' or trailing '/'); "
            f"write {e.normalised!r} if that is what you mean.",
        }[e.rule]
        raise ScriptError(sentence, code="invalid_path") from None


def under_roots(path: str, roots: list[str]) -> bool:
    """Strictly below a root: the root folder itself is not a script."""
    return any(path.startswith(root.rstrip("/") + "/") and path != root for root in roots)


def validate(cluster: Cluster, value: object) -> str:
    """The script path, checked as text against the cluster's allowed roots."""
    path = check_path(value)
    roots = cluster.script_roots
    if not under_roots(path, roots):
        raise ScriptError(
            f"{path} is outside the folders {cluster.name} runs scripts from ({', '.join(roots)}).",
            code="path_outside_roots",
        )
    return path


def read_as(cluster: Cluster, username: str, path: str, *, directory: str | None = None) -> Script:
    """The script's text, read on the head node by `username`; ScriptError says why not.

    With `directory`, that working directory is checked too (check_directory), after the script,
    whose refusals come first: on a remote head node in the same command.
    """
    limit = max_script_bytes()
    if directory is not None and not _local_reader(cluster):
        return _read_with_directory(cluster, username, path, directory, limit)
    if _local_reader(cluster):
        uid, gid, groups = _ids(username)
        try:
            code, out, err = reader.read(uid, gid, groups, path, limit + 1, timeout=READ_TIMEOUT)
        except reader.ReaderUnavailable as e:
            raise _unreachable(
                f"The script could not be read on the head node ({e}); nothing was submitted."
            ) from None
        result = headnode.Result(code, out.decode("utf-8", "replace"), err)
    else:
        result = _run_reader(cluster, username, [READER, "sh", path, str(limit + 1)])
    script = script_from(cluster, username, path, result)
    if directory is not None:
        check_directory(cluster, username, directory)
    return script


def _read_with_directory(cluster: Cluster, username: str, path: str, directory: str, limit: int) -> Script:
    result = _run_reader(cluster, username, [READ_WITH_DIRECTORY, "sh", path, str(limit + 1), directory])
    code, nul, rest = result.stdout.partition("\x00")
    if not nul or code not in ("0", "3", "5"):
        # The shell never got as far as the check (runuser refused, say): READER's own words apply.
        code, rest = "", result.stdout
    script = script_from(cluster, username, path, headnode.Result(result.exit_code, rest, result.stderr))
    if not code:
        raise ScriptError(
            f"Checking {directory} on the head node gave no answer.", code="invalid_workdir", status=502
        )
    directory_answer(username, directory, headnode.Result(int(code), "", ""))
    return script


def _run_reader(cluster: Cluster, username: str, shell: list[str]) -> headnode.Result:
    """`sh -c SCRIPT ARGS…` run on the head node as `username`; a head node that cannot be reached is a
    ScriptError (502), a read the shell refused is the result's to say."""
    try:
        return headnode.run(cluster, _as_user(cluster, username, ["sh", "-c", *shell]), timeout=READ_TIMEOUT)
    except headnode.HeadNodeError as e:
        raise _unreachable(f"{e} The script could not be read; nothing was submitted.") from None


def _unreachable(message: str) -> ScriptError:
    """The head node (or the local reader) could not be asked: a 502, nothing submitted."""
    return ScriptError(message, code="head_node_unreachable", status=502)


def script_from(cluster: Cluster, username: str, path: str, result: headnode.Result) -> Script:
    """The Script of a read's answer (READER's output, or the local reader's): or the ScriptError it means."""
    if not result.ok:
        raise _read_failed(path, username, result)
    resolved, nul, text = result.stdout.partition("\x00")
    if not nul:
        raise ScriptError(
            f"Reading {path} on the head node gave no answer.", code="script_unreadable", status=502
        )
    if not under_roots(resolved, cluster.script_roots):
        raise ScriptError(
            f"{path} is a link to {resolved}, which is outside the folders {cluster.name} runs scripts from "
            f"({', '.join(cluster.script_roots)}).",
            code="path_outside_roots",
        )
    check_text(text, path)
    return Script(path=path, resolved_path=resolved, text=text)


def _read_failed(path: str, username: str, result: headnode.Result) -> ScriptError:
    said = result.output()
    if "Permission denied" in said:
        return ScriptError(
            f"{username} may not read {path} (Permission denied); a job runs with your own permissions, "
            "so the script must be readable by you.",
            code="script_unreadable",
            status=403,
        )
    if "No such file" in said or result.exit_code == 3:
        return ScriptError(f"{path} does not exist on the cluster.", code="script_not_found")
    if result.exit_code == 4:
        return ScriptError(f"{path} is not a regular file.", code="script_invalid")
    if "runuser" in said and "does not exist" in said:
        return ScriptError(
            f"The account {username} is missing on the head node ({said}).",
            code="account_missing",
            status=502,
        )
    return ScriptError(
        f"{path} could not be read as {username}: {said or f'exit {result.exit_code}'}.",
        code="script_unreadable",
        status=400,
    )


def check_directory(cluster: Cluster, username: str, path: str) -> None:
    """The working directory exists and `username` may enter it; Slurm would silently use /tmp instead."""
    if _local_reader(cluster):
        uid, gid, groups = _ids(username)
        try:
            code = reader.enter(uid, gid, groups, path, timeout=READ_TIMEOUT)
        except reader.ReaderUnavailable as e:
            raise _unreachable(
                f"The working directory could not be checked on the head node ({e}). Nothing was submitted."
            ) from None
        result = headnode.Result(code, "", "")
    else:
        argv = _as_user(cluster, username, ["sh", "-c", DIRECTORY_CHECK, "sh", path])
        try:
            result = headnode.run(cluster, argv, timeout=READ_TIMEOUT)
        except headnode.HeadNodeError as e:
            raise _unreachable(f"{e} Nothing was submitted.") from None
    directory_answer(username, path, result)


def directory_answer(username: str, path: str, result: headnode.Result) -> None:
    """What DIRECTORY_CHECK's exit code (or the local reader's) means: nothing, or a ScriptError."""
    if result.exit_code == 3:
        raise ScriptError(
            f"The working directory {path} does not exist on the cluster.", code="invalid_workdir"
        )
    if not result.ok:
        raise ScriptError(
            f"{username} may not enter the working directory {path} (Permission denied).",
            code="invalid_workdir",
            status=403,
        )


def _local_reader(cluster: Cluster) -> bool:
    """On this host the console's long-lived reader reads as the person (clusters.reader), no process each."""
    return cluster.transport == "local" and reader.available()


def _ids(username: str) -> tuple[int, int, list[int]]:
    try:
        return headnode.local_ids(username)
    except headnode.UnknownUser as e:
        raise ScriptError(str(e), code="account_missing", status=502) from None


def _as_user(cluster: Cluster, username: str, argv: list[str]) -> list[str]:
    """`argv` as run by `username` on the head node (clusters.headnode.as_user); ScriptError without them."""
    try:
        return headnode.as_user(cluster, username, argv)
    except headnode.UnknownUser as e:
        raise ScriptError(str(e), code="account_missing", status=502) from None
