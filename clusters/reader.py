"""Reading a file (and entering a folder) on this host as a person, without a new process per read.

A submit on a local head node reads the person's script as them, so the kernel decides exactly as it
would for sbatch: their uid, primary group, supplementary groups, ACLs. It did so by starting
`setpriv … sh -c` for every read (~5 ms of every submit). Here a long-lived helper does it instead:

- **Where it lives.** A small Python process (this file run as a script, standard library only, no
  Django, no settings, no secrets in its environment), started lazily by the console process that
  needs it and talking to it over a socketpair. The socket has no name in the file system, so nothing
  but the console process can reach it: not a person's shell, which runs as them and cannot open a
  root process's file descriptors either. It answers only the two questions below.
- **How it takes on the person.** Per request it sets its supplementary groups (setgroups), then its
  file-system gid and uid (setfsgid, setfsuid), each through the raw system call, and verifies them;
  everything after that is checked by the kernel with those credentials. The effective uid stays 0,
  but once the fsuid is not 0 the kernel drops the file-system capabilities (CAP_DAC_OVERRIDE,
  CAP_DAC_READ_SEARCH, CAP_FOWNER, …) from the effective set, so root's overrides do not apply to
  these reads; setting the fsuid back to 0 afterwards restores them. The helper is single-threaded, so
  one request's identity can never leak into another's. uid 0 and gid 0 are refused outright.
- **Same answers as before.** `read` resolves the path as the person (every component looked up with
  their permissions), requires a regular file, opens it as them (Permission denied is theirs), and
  returns the resolved path and at most `limit` bytes; the exit codes and the messages are those of
  the old `realpath` / `test` / `head` script (jobs.scripts maps them to sentences). `enter` is
  `test -d` then `test -x`: the search permission is checked by looking up `PATH/.`, which the kernel
  allows only to someone who may enter PATH.
- **Concurrency and death.** A reader answers one request at a time; a console process keeps up to
  MAX_READERS of them (one more is started when all are busy, so a slow file system stalls only its
  own read). A reader that dies or stops answering is killed and forgotten, the read is tried once
  more on a fresh one, and failing that the caller gets ReaderUnavailable with a plain sentence.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

MAX_READERS = 4
# How long a reader may take to start and say it is ready.
START_TIMEOUT = 10.0
_HEADER = struct.Struct("!I")
# Requests and answers are small; this bounds what either side accepts (a script is capped far below).
MAX_MESSAGE = 64 * 1024 * 1024

# setgroups, setfsuid, setfsgid by machine: called through syscall(2), not glibc's wrappers, because
# glibc's setgroups changes every thread of a process (the helper has one, but the call says what it means).
_SYSCALLS = {
    "x86_64": {"setgroups": 116, "setfsuid": 122, "setfsgid": 123},
    "aarch64": {"setgroups": 159, "setfsuid": 151, "setfsgid": 152},
}
ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class ReaderUnavailable(Exception):
    """No reader could answer (it could not start, died twice, or took longer than the timeout)."""


def available() -> bool:
    """Whether this host can run readers: root, and a machine whose system call numbers are known."""
    return os.geteuid() == 0 and os.uname().machine in _SYSCALLS


# --- the console's side ------------------------------------------------------------------------------


def read(
    uid: int, gid: int, groups: list[int], path: str, limit: int, *, timeout: float
) -> tuple[int, bytes, str]:
    """(exit code, stdout, stderr) of reading `path` as the person, as the old shell script gave them."""
    answer = _ask(
        {"op": "read", "uid": uid, "gid": gid, "groups": groups, "path": path, "limit": limit}, timeout
    )
    return answer["exit"], base64.b64decode(answer.get("stdout", "")), answer.get("stderr", "")


def enter(uid: int, gid: int, groups: list[int], path: str, *, timeout: float) -> int:
    """0 when the person may enter the folder `path`, 3 when it is not one (for them), 5 when they may not."""
    return _ask({"op": "enter", "uid": uid, "gid": gid, "groups": groups, "path": path}, timeout)["exit"]


class _Reader:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - a fixed argv: this interpreter and this file
                [sys.executable, "-I", "-S", os.path.abspath(__file__), "--serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=ENVIRONMENT,
                cwd="/",
                # Not in the console's process group: a signal meant for a terminal's job never reaches it.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.socket = ours
        try:
            hello = self.ask({"op": "hello"}, START_TIMEOUT)
        except Exception:
            self.close()
            raise
        if hello.get("exit") != 0:
            self.close()
            raise ReaderUnavailable(f"the reader could not start: {hello.get('stderr') or 'no reason given'}")

    def ask(self, request: dict, timeout: float) -> dict:
        self.socket.settimeout(timeout)
        _send(self.socket, request)
        answer = _receive(self.socket)
        if answer is None:
            raise EOFError("the reader closed its end")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.process.wait(timeout=5)


_idle: list[_Reader] = []
_started = 0
_lock = threading.Condition()


def _ask(request: dict, timeout: float) -> dict:
    last = ""
    for _attempt in range(2):
        reader = _take(timeout)
        try:
            answer = reader.ask(request, timeout)
        except (OSError, EOFError, ValueError) as e:
            # Dead, or stuck on a file system that does not answer: it goes, a fresh one gets the retry.
            last = "it did not answer in time" if isinstance(e, TimeoutError) else f"it stopped ({e})"
            _forget(reader)
            if isinstance(e, TimeoutError):
                break
            continue
        if answer.get("exit") == 125:
            # The reader refused the request itself (a bug on our side, not the person's file), or could
            # not switch identity and ended: it is not used again.
            _forget(reader)
            raise ReaderUnavailable(answer.get("stderr") or "the reader refused the request")
        _give_back(reader)
        return answer
    raise ReaderUnavailable(f"the file reader of this console failed: {last}")


def _take(timeout: float) -> _Reader:
    global _started
    deadline = time.monotonic() + timeout
    with _lock:
        while not _idle and _started >= MAX_READERS:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReaderUnavailable(f"all {MAX_READERS} file readers of this console are busy")
            _lock.wait(left)
        if _idle:
            return _idle.pop()
        _started += 1
    try:
        return _Reader()
    except BaseException as e:
        with _lock:
            _started -= 1
            _lock.notify()
        if isinstance(e, ReaderUnavailable):
            raise
        if isinstance(e, Exception):
            raise ReaderUnavailable(f"the file reader of this console could not start ({e})") from None
        raise


def _give_back(reader: _Reader) -> None:
    with _lock:
        _idle.append(reader)
        _lock.notify()


def _forget(reader: _Reader) -> None:
    global _started
    reader.close()
    with _lock:
        _started -= 1
        _lock.notify()


def stop_all() -> None:
    """End every idle reader (tests; a console process's readers otherwise end with it)."""
    global _started
    with _lock:
        readers, _idle[:] = list(_idle), []
        _started -= len(readers)
    for reader in readers:
        reader.close()


def _send(sock: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


def _receive(sock: socket.socket) -> dict | None:
    header = _exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes is too large")
    data = _exactly(sock, size)
    if data is None:
        raise EOFError("the message was cut short")
    return json.loads(data)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(size - got, 1 << 20))
        if not chunk:
            if got:
                raise EOFError("the message was cut short")
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --- the reader's side -------------------------------------------------------------------------------


class _Identity:
    """The person's file-system credentials, taken on for one request and given back after it."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.numbers = _SYSCALLS[os.uname().machine]

    def _setgroups(self, groups: list[int]) -> None:
        array = (ctypes.c_uint * max(1, len(groups)))(*groups)
        if self.libc.syscall(self.numbers["setgroups"], ctypes.c_size_t(len(groups)), array) != 0:
            raise OSError(ctypes.get_errno(), "setgroups failed")
        if sorted(os.getgroups()) != sorted(set(groups)):
            raise OSError(0, "setgroups did not take")

    def _setfs(self, name: str, value: int) -> None:
        self.libc.syscall(self.numbers[name], ctypes.c_uint(value))
        # The call returns the previous value and never fails visibly: asking again with the same value
        # returns the current one, which must be what was asked for.
        if self.libc.syscall(self.numbers[name], ctypes.c_uint(value)) != value:
            raise OSError(0, f"{name}({value}) did not take")

    @contextlib.contextmanager
    def of(self, uid: int, gid: int, groups: list[int]):
        try:
            self._setgroups(groups)
            self._setfs("setfsgid", gid)
            self._setfs("setfsuid", uid)  # last: from here on root's file-system capabilities are gone
            yield
        finally:
            self._setfs("setfsuid", 0)
            self._setfs("setfsgid", 0)
            self._setgroups([])


def _checked(request: dict) -> tuple[int, int, list[int], str]:
    uid, gid, groups, path = (
        request.get("uid"),
        request.get("gid"),
        request.get("groups"),
        request.get("path"),
    )
    ids = [uid, gid, *(groups if isinstance(groups, list) else [None])]
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 - 1 for i in ids):
        raise ValueError("uid, gid and groups must be ids")
    if uid == 0 or gid == 0:
        raise ValueError("the reader never reads as root")
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise ValueError("path must be absolute")
    return uid, gid, groups, path


def _why(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def _read(path: str, limit: int) -> dict:
    """The old script's steps: realpath -e (exit 3), test -f (4), test -r / open (5), head -c."""
    try:
        resolved = os.path.realpath(path, strict=True)
    except OSError as e:
        return {"exit": 3, "stderr": f"realpath: {path}: {_why(e)}"}
    try:
        regular = stat.S_ISREG(os.stat(resolved).st_mode)
    except OSError:
        regular = False
    if not regular:
        return {"exit": 4, "stderr": f"{resolved} is not a regular file"}
    try:
        # O_NONBLOCK: should the file have become a FIFO since the stat, opening it does not hang.
        fd = os.open(resolved, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return {"exit": 5, "stderr": f"cannot open {resolved}: {_why(e)}"}
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return {"exit": 4, "stderr": f"{resolved} is not a regular file"}
        os.set_blocking(fd, True)
        chunks, got = [], 0
        while got < limit:
            chunk = os.read(fd, min(limit - got, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as e:
        return {"exit": 1, "stderr": f"head: error reading '{resolved}': {_why(e)}"}
    finally:
        os.close(fd)
    data = resolved.encode("utf-8", "surrogateescape") + b"\x00" + b"".join(chunks)
    return {"exit": 0, "stdout": base64.b64encode(data).decode("ascii")}


def _enter(path: str) -> dict:
    """`test -d PATH` (exit 3), then `test -x PATH` (5), as the person."""
    try:
        if not stat.S_ISDIR(os.stat(path).st_mode):
            return {"exit": 3}
    except OSError:
        return {"exit": 3}
    try:
        # Looking up PATH/. needs search permission on PATH: the kernel's answer to "may they enter it".
        os.stat(os.path.join(path, "."))
    except OSError:
        return {"exit": 5}
    return {"exit": 0}


def _answer(identity: _Identity, request: dict) -> dict:
    op = request.get("op")
    if op == "hello":
        return {"exit": 0}
    try:
        uid, gid, groups, path = _checked(request)
        limit = request.get("limit", 0)
        if op == "read" and not (isinstance(limit, int) and 0 < limit <= MAX_MESSAGE // 2):
            raise ValueError("limit must be a positive size")
        if op not in ("read", "enter"):
            raise ValueError(f"unknown request {op!r}")
    except ValueError as e:
        return {"exit": 125, "stderr": str(e)}
    with identity.of(uid, gid, groups):
        return _read(path, limit) if op == "read" else _enter(path)


def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    if os.geteuid() != 0:
        _send(sock, {"exit": 1, "stderr": "the reader must run as root"})
        return
    try:
        identity = _Identity()
    except (KeyError, OSError) as e:
        _send(sock, {"exit": 1, "stderr": f"this host cannot switch identities ({e})"})
        return
    os.umask(0o077)
    while True:
        request = _receive(sock)
        if request is None:
            return  # the console process closed its end (or ended): so do we
        try:
            answer = _answer(identity, request)
        except OSError as e:
            # The identity could not be taken on or given back: never answer from a half-switched state.
            _send(sock, {"exit": 125, "stderr": f"the reader could not switch identity ({_why(e)})"})
            return
        _send(sock, answer)


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(int(sys.argv[2]))
