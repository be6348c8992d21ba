"""The terminal transport for a head node that hosts the console: a PTY here, a login shell as the user."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import pty
import pwd
import re
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import AsyncIterator

from .. import confine
from .base import Transport, TransportError, check_cwd

# A login name as useradd accepts it; anything else never reaches runuser.
_POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

# Runs as the user: the requested directory if they may enter it, else home; then their login shell.
# The directory arrives as $1 and never inside the script text, so nothing in it can be run.
_SHELL_SCRIPT = (
    'if [ -z "$1" ]; then cd; '
    'elif ! cd -- "$1" 2>/dev/null; then '
    'printf "clusterra: %s cannot be entered; starting in your home directory\\n" "$1" >&2; cd; fi; '
    'exec "${SHELL:-/bin/sh}" -l'
)
# The console's own environment holds secrets (database URL, keys); the shell starts from this instead,
# plus the user's HOME, SHELL, USER and LOGNAME, and its login scripts build the rest.
SHELL_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "TERM": "xterm-256color",
    "COLORTERM": "truecolor",
    "LANG": "C.UTF-8",
}
# A person's local shells together, unless the cluster says otherwise (clusters.Cluster.shell_*).
DEFAULT_LIMITS = confine.Limits(processes=512, memory_mb=4096, cpus=1.0)
READ_SIZE = 64 * 1024
# Above this much unread output the PTY is no longer read, so a flood (`yes`) blocks the writer
# in the kernel instead of filling the console's memory.
HIGH_WATER = 1 << 20
LOW_WATER = 256 * 1024
# How long a shell gets to end after the hang-up before it is killed.
HANGUP_GRACE = 2.0
# How long the end of the output waits for the shell's exit status.
EXIT_WAIT = 1.0


class LocalPtyTransport(Transport):
    """A PTY on this host running `user`'s login shell, started in `cwd` (or home if it cannot be entered).

    The console must run as root to start a shell as someone else; runuser goes through PAM
    (limits, session) the way su does, and setsid gives the shell the PTY as its controlling
    terminal so job control and SIGWINCH work.
    """

    def __init__(
        self, user: str, cwd: str | None = None, limits: confine.Limits | None = None, *, slurm_bin: str = ""
    ) -> None:
        if not _POSIX_NAME.fullmatch(user):
            raise ValueError(f"not a POSIX user name: {user!r}")
        self.user = user
        # The cluster's Slurm commands folder (Cluster.slurm_bin), for the shell to find them first.
        self.slurm_bin = slurm_bin
        self.cwd = check_cwd(cwd)
        self.limits = limits or DEFAULT_LIMITS
        self.placement: confine.Placement | None = None
        self.session_id = ""
        self.ended_reason: str | None = None
        self.exit_status: int | None = None
        self._master: int | None = None
        self._proc: Child | None = None
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._reading = False
        self._ended = False
        self._closed = False
        self._write_lock = asyncio.Lock()
        self._exit_watch: asyncio.Task[None] | None = None
        self._writable_waiter: asyncio.Future[None] | None = None

    async def start(self, cols: int, rows: int) -> None:
        env = self._environment()
        if os.geteuid() == 0:
            # Only a console running as root starts other people's shells, and only root can confine them.
            self.placement = await asyncio.to_thread(confine.place, self.user, self.limits)
        argv = self._argv()
        master, slave = pty.openpty()
        try:
            _set_size(master, cols, rows)
            # Not a new session here: setsid(1) makes one itself (it would fork if the child already led one)
            # and then takes the PTY as the controlling terminal.
            self._proc = Child(argv, terminal=slave, env=env)
        except OSError as exc:
            os.close(master)
            if self.placement is not None:
                await asyncio.to_thread(self.placement.release)
            self.ended_reason = f"Could not start a shell on this host: {exc.strerror or exc}."
            raise TransportError(self.ended_reason) from exc
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self.session_id = f"pty-{os.uname().nodename}-{self._proc.pid}"
        self._resume_reading()
        self._exit_watch = asyncio.get_running_loop().create_task(self._watch_exit())

    async def send(self, data: bytes) -> None:
        if self._closed or self._master is None or not data:
            return
        async with self._write_lock:
            view = memoryview(data)
            while view and not self._closed:
                try:
                    written = os.write(self._master, view)
                except BlockingIOError:
                    await self._writable()
                    continue
                except OSError:
                    return  # the shell is gone; output() ends and ended_reason says why
                view = view[written:]

    async def resize(self, cols: int, rows: int) -> None:
        if self._master is not None and not self._closed:
            # The kernel sends SIGWINCH to the shell's foreground job.
            _set_size(self._master, cols, rows)

    async def output(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._chunks.get()
            if item is None:
                self._chunks.put_nowait(None)
                watch = self._exit_watch
                if watch is not None and not watch.done():
                    # The terminal hung up as the shell exited: wait a moment to say how it exited.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(watch), EXIT_WAIT)
                return
            # Whatever else is already waiting rides along in the same frame; nothing waits for more.
            chunks = [item]
            while not self._chunks.empty():
                more = self._chunks.get_nowait()
                if more is None:
                    self._chunks.put_nowait(None)
                    break
                chunks.append(more)
            data = b"".join(chunks)
            self._queued -= len(data)
            if not self._reading and not self._ended and self._queued < LOW_WATER:
                self._resume_reading()
            yield data

    async def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self.ended_reason is None:
            self.ended_reason = reason
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # What a dropped SSH connection does: the shell gets SIGHUP and passes it on to its jobs.
            # runuser blocks SIGHUP and would answer SIGTERM (which bash ignores) only with a late
            # SIGKILL, so the signal goes to every process in the terminal's session, shell included.
            await signal_session(proc.pid, signal.SIGHUP)
        self._end()
        waiter = self._writable_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a blocked send gives up: there is no terminal to write to any more
        if self._master is not None:
            asyncio.get_running_loop().remove_writer(self._master)
            # Closing the master hangs up the terminal for anything still attached to it.
            os.close(self._master)
            self._master = None
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), HANGUP_GRACE)
            except TimeoutError:
                await signal_session(proc.pid, signal.SIGKILL)
                await proc.wait()
        if self.placement is not None:
            # What left the terminal's session (setsid, nohup, a daemon) is still in its cgroup: ended too.
            await asyncio.to_thread(self.placement.release)
        if self._exit_watch is not None:
            await self._exit_watch

    # ---- internals ------------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        setsid = shutil.which("setsid") or "/usr/bin/setsid"
        shell = ["/bin/sh", "-c", _SHELL_SCRIPT, "clusterra-shell", self.cwd or ""]
        if os.geteuid() == 0:
            placement = self.placement or confine.Placement("none")
            # rlimits (where there are no cgroups to write) are set after the switch, so the person cannot
            # raise them; cgroups are joined before it, so nothing of the person's runs outside.
            shell = [*placement.rlimit_argv, *shell]
            runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/runuser"
            return placement.wrap([setsid, "--ctty", runuser, "-u", self.user, "--", *shell])
        if _current_user() == self.user:
            # A laptop demo where the console runs as the very person: no switch needed.
            return [setsid, "--ctty", *shell]
        raise TransportError(
            f"The console does not run as root on this host, so it cannot start a shell as {self.user}. "
            "An administrator should run it as root or use the SSM transport."
        )

    def _environment(self) -> dict[str, str]:
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            raise TransportError(
                f"There is no Linux user {self.user} on this host, so no shell can start as them; "
                "an administrator should check the account's provisioning."
            ) from None
        # runuser -u sets none of these (su would set some); the login shell expects all four.
        environment = SHELL_ENVIRONMENT | {
            "HOME": entry.pw_dir,
            "SHELL": entry.pw_shell or "/bin/sh",
            "USER": self.user,
            "LOGNAME": self.user,
        }
        if self.slurm_bin:
            # A login shell's /etc/profile sets PATH anew, so a PATH given here would be lost;
            # /etc/profile.d/clusterra-slurm.sh (scripts/slurm-release.sh) puts this folder first.
            environment["CLUSTERRA_SLURM_BIN"] = self.slurm_bin
        return environment

    def _resume_reading(self) -> None:
        if self._master is not None and not self._ended:
            asyncio.get_running_loop().add_reader(self._master, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading and self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
        self._reading = False

    def _on_readable(self) -> None:
        self._read_available(once=True)

    def _read_available(self, *, once: bool) -> None:
        while self._master is not None and not self._ended:
            try:
                data = os.read(self._master, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""  # EIO: nothing holds the terminal's other side any more
            if not data:
                self._end()
                return
            self._chunks.put_nowait(data)
            self._queued += len(data)
            if self._queued >= HIGH_WATER:
                self._pause_reading()
                return
            if once:
                return

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        status = await self._proc.wait()
        self.exit_status = status
        if not self._ended and self._master is not None:
            # The shell is gone; hand over what it wrote last rather than wait for background jobs.
            self._read_available(once=False)
        if self.ended_reason is None:
            self.ended_reason = _describe_exit(status)
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._pause_reading()
        self._ended = True
        self._chunks.put_nowait(None)

    async def _writable(self) -> None:
        """Wait until the PTY takes input again (the shell is not reading and its buffer is full)."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        assert self._master is not None
        fd = self._master
        self._writable_waiter = ready
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            # After close() the number may already belong to another terminal's PTY: leave it alone.
            if self._master == fd:
                loop.remove_writer(fd)
            self._writable_waiter = None


class Child:
    """A process started on the terminal's PTY, its end heard through a pidfd on the event loop.

    asyncio.create_subprocess_exec in Python 3.11 waits for every child in a thread of its own
    (ThreadedChildWatcher): a worker holding 2,000 terminals held 2,000 threads blocked in waitpid.
    A pidfd becomes readable when the process ends, so one event loop hears all of them; where there
    is no pidfd (Linux before 5.3) one thread per child waits as before.
    """

    def __init__(self, argv: list[str], *, terminal: int, env: dict[str, str]) -> None:
        self._loop = asyncio.get_running_loop()
        # Started as asyncio would (fork and exec in this thread, every other descriptor closed), but with
        # nobody watching yet: the pidfd below does that. The PTY's slave side is all three standard files.
        self._popen = subprocess.Popen(  # noqa: S603 - argv is built by the transport, never from a person
            argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd="/", close_fds=True
        )
        self.pid = self._popen.pid
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self._loop.create_task(self._wait_in_thread(), name=f"terminal-child-{self.pid}")
        else:
            self._loop.add_reader(self._pidfd, self._reap)

    @property
    def returncode(self) -> int | None:
        """None while it runs; then its exit status, or minus the signal that ended it (as asyncio says)."""
        return self._popen.returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def _reap(self) -> None:
        # Readable means it has ended; poll() collects it (a zombie until then) and sets returncode.
        status = self._popen.poll()
        if status is None:
            return
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)
        if not self._exited.done():
            self._exited.set_result(status)

    async def _wait_in_thread(self) -> None:
        status = await asyncio.to_thread(self._popen.wait)
        if not self._exited.done():
            self._exited.set_result(status)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def signal_session(sid: int, sig: signal.Signals) -> None:
    """Send `sig` to every process in session `sid`, without holding up the event loop.

    Finding them means reading every /proc/<pid>/stat (there is no kill-by-session call), which took
    the loop for seconds when 500 terminals closed at once. The scan runs in a thread, and requests
    made while one runs wait for the next, which serves them all: a mass close costs a few scans.
    """
    global _signaller
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    _signals_waiting.append((sid, sig, done))
    if _signaller is None or _signaller.done() or _signaller.get_loop() is not loop:
        _signaller = loop.create_task(_send_waiting_signals(), name="terminal-session-signals")
    await done


_signals_waiting: list[tuple[int, signal.Signals, asyncio.Future[None]]] = []
_signaller: asyncio.Task[None] | None = None


async def _send_waiting_signals() -> None:
    while _signals_waiting:
        batch = list(_signals_waiting)
        _signals_waiting.clear()
        problem: Exception | None = None
        try:
            await asyncio.to_thread(_signal_sessions, [(sid, sig) for sid, sig, _ in batch])
        except Exception as exc:
            problem = exc
        for *_, done in batch:
            # A waiter whose loop has gone (a test's, torn down) has nobody left to tell.
            if done.done() or done.get_loop().is_closed():
                continue
            if problem is None:
                done.set_result(None)
            else:
                done.set_exception(problem)


def _signal_sessions(requests: list[tuple[int, signal.Signals]]) -> None:
    """One pass over /proc for all `requests` (session id, signal); blocking."""
    members = _session_members({sid for sid, _ in requests})
    for sid, sig in requests:
        for pid in members.get(sid, ()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _session_members(sids: set[int]) -> dict[int, list[int]]:
    """The processes of each session in `sids` (those that started a session of their own have left it)."""
    members: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses; the fields after its last ')' do not.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and (sid := int(fields[3])) in sids:
            members.setdefault(sid, []).append(int(entry.name))
    return members


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return ""


def _describe_exit(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"The shell was ended by {name}."
    return f"The shell ended (exit status {status})."
