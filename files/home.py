"""The person's home on a cluster, listed, read and written **as the person** on the head node.

Decisions:

- Every command runs through `clusters.headnode.run` wrapped by `headnode.as_user` (setpriv on this
  host, runuser over SSM), exactly as job scripts are read: the kernel decides who may read and
  write, with every credential the person has, and a file the console writes is theirs.
- A path is checked as text first (clusters.paths: absolute, normalised, no control character)
  and must be the home or below it; the home is `home_root/<POSIX name>`, where provisioning made
  it (useradd -d). Then, on the head node and in the same command that acts, the path is
  resolved with `realpath` as the person and the **resolved** path must be under the resolved
  home too: a link in the home pointing at /etc is refused, and a home_root that is itself a
  link (/home → /data/home) still works. The home is 0700, so only the person (and root) can
  swap a link between the check and the act, which gives them nothing they could not do anyway.
- Shell text is fixed; values arrive only as arguments (`sh -c SCRIPT sh "$1" …`).
- Reads come back base64-encoded with the file's size first, so bytes arrive exactly (a
  download is binary) and an answer cut short (SSM returns at most 24,000 characters of output)
  is noticed instead of shown as the file.
- Writes are atomic: a temporary file in the same folder, then rename(2) over the target (a link
  is written through to the file it names), keeping the mode of the file it replaces; a new file
  appears with link(2), which fails if the name was taken meanwhile. Saving over a file checks
  first that it is still the version the person opened (its SHA-256), so a change made in
  between is reported, not overwritten. A file the person may not write is refused with the
  kernel's answer even though, owning the folder, they could rename over it.
- New files get an explicit mode rather than whatever umask the console's process has: 0644 for
  a text file, 0755 for a job script and a folder. That is what the person's own shell gives
  (`touch`, `chmod +x`, `mkdir`) under the head node's default umask 022 (login.defs), so a file
  made here looks like one made in the terminal; while it is in the home (0700) nobody else can
  reach it whatever its mode.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from clusters import headnode, paths
from clusters.models import Cluster
from clusters.refusal import Refusal

TIMEOUT = 30.0
# A folder listing stops here; the page says so (the terminal lists the rest).
MAX_ENTRIES = 5000
NEW_FILE_MODE = "644"
NEW_SCRIPT_MODE = "755"
NEW_FOLDER_MODE = "755"

# Exit codes the commands below use to say what they found, besides the tools' own words.
NOT_FOUND = 3
NOT_A_FOLDER = 4
DENIED = 5
OUTSIDE = 6
CHANGED = 7
EXISTS = 8
TOO_LARGE = 9
NO_HOME = 10
GONE = 11
NOT_WRITTEN = 12
NOT_A_FILE = 13

# "$2" is the home: resolved first, and `inside` tells whether a resolved path is in it.
_HOME = (
    'home=$(realpath -e -- "$2") || exit 10; '
    'inside() { case "$1" in "$home"|"$home"/*) return 0;; esac; return 1; }; '
)
# `sh -c LISTER sh FOLDER HOME`: the resolved folder, a NUL, then for each entry its type, the type
# a link points at, size, modification time and name, each ended by a NUL (a name may hold anything else).
LISTER = _HOME + (
    'resolved=$(realpath -e -- "$1") || exit 3; '
    'inside "$resolved" || { printf \'%s\' "$resolved"; exit 6; }; '
    '[ -d "$resolved" ] || exit 4; '
    '{ [ -r "$resolved" ] && [ -x "$resolved" ]; } || '
    '{ echo "cannot open directory $resolved: Permission denied" >&2; exit 5; }; '
    "printf '%s\\0' \"$resolved\"; "
    "exec find \"$resolved\" -mindepth 1 -maxdepth 1 -printf '%y\\0%Y\\0%s\\0%T@\\0%P\\0'"
)
# `sh -c READER sh PATH HOME LIMIT`: the resolved path, a NUL, "size mtime mode", a NUL, then the
# file in base64 (nothing when it is over LIMIT bytes: exit 9).
READER = _HOME + (
    'resolved=$(realpath -e -- "$1") || exit 3; '
    'inside "$resolved" || { printf \'%s\' "$resolved"; exit 6; }; '
    '[ -f "$resolved" ] || exit 13; '
    '[ -r "$resolved" ] || { echo "cannot open $resolved: Permission denied" >&2; exit 5; }; '
    "info=$(stat -c '%s %Y %a' -- \"$resolved\") || exit 5; "
    'printf \'%s\\0%s\\0\' "$resolved" "$info"; '
    "size=${info%% *}; "
    '[ "$size" -le "$3" ] || exit 9; '
    'head -c "$size" -- "$resolved" | base64 -w 0'
)
# `sh -c WRITER sh FOLDER HOME NAME EXPECT MODE` with the new content on stdin. EXPECT is "new" (the
# name must be free), "any" (replace whatever file is there) or the SHA-256 the file must still have.
# MODE is for a new file; a replaced one keeps its own. Prints "mode size mtime", a NUL, the path written.
WRITER = _HOME + (
    'dir=$(realpath -e -- "$1") || exit 3; '
    'inside "$dir" || { printf \'%s\' "$dir"; exit 6; }; '
    '[ -d "$dir" ] || exit 4; '
    'target="$dir/$3"; '
    'if [ -L "$target" ]; then '
    '  [ "$4" = new ] && exit 8; '
    '  target=$(realpath -e -- "$target") || exit 3; '
    '  inside "$target" || { printf \'%s\' "$target"; exit 6; }; '
    "  dir=${target%/*}; "
    "fi; "
    'if [ -e "$target" ]; then '
    '  [ "$4" = new ] && exit 8; '
    '  [ -f "$target" ] || exit 13; '
    '  [ -w "$target" ] || { echo "cannot write $target: Permission denied" >&2; exit 5; }; '
    '  if [ "$4" != any ]; then '
    '    sum=$(sha256sum -- "$target") || exit 5; '
    '    [ "${sum%% *}" = "$4" ] || exit 7; '
    "  fi; "
    '  mode=$(stat -c %a -- "$target") || exit 5; '
    "else "
    '  case "$4" in new|any) ;; *) exit 11;; esac; '
    "  mode=$5; "
    "fi; "
    'tmp=$(mktemp -- "$dir/.clusterra-XXXXXXXX") || exit 12; '
    "trap 'rm -f -- \"$tmp\"' EXIT; "
    'cat >"$tmp" || exit 12; '
    'chmod -- "$mode" "$tmp" || exit 12; '
    'if [ "$4" = new ]; then '
    '  if ! ln -- "$tmp" "$target"; then { [ -e "$target" ] || [ -L "$target" ]; } && exit 8; exit 12; fi; '
    "else "
    '  mv -f -T -- "$tmp" "$target" || exit 12; '
    "fi; "
    "stat -c '%a %s %Y' -- \"$target\" | tr -d '\\n'; "
    "printf '\\0%s' \"$target\""
)
# `sh -c MAKE_FOLDER sh PARENT HOME NAME MODE`: prints the folder made.
MAKE_FOLDER = _HOME + (
    'dir=$(realpath -e -- "$1") || exit 3; '
    'inside "$dir" || { printf \'%s\' "$dir"; exit 6; }; '
    '[ -d "$dir" ] || exit 4; '
    '{ [ -e "$dir/$3" ] || [ -L "$dir/$3" ]; } && exit 8; '
    'mkdir -m "$4" -- "$dir/$3" || exit 12; '
    "printf '%s' \"$dir/$3\""
)

# find's %y letters, in the product's words.
KINDS = {"d": "folder", "f": "file", "l": "link", "p": "pipe", "s": "socket", "c": "device", "b": "device"}


class FileError(Refusal):
    """The file (or folder) cannot be used as asked; `message` says why, `path` is what was asked for."""

    def __init__(self, message: str, *, code: str, status: int = 400, path: str = "") -> None:
        super().__init__(message, code=code, status=status)
        self.path = path


@dataclass(frozen=True)
class Entry:
    """One name in a folder, as `find` saw it (a link's size and time are the link's own)."""

    name: str
    path: str  # "" when the name cannot travel as a path (a control character, bytes that are not UTF-8)
    kind: str  # folder, file, link, pipe, socket, device
    points_to: str  # for a link: folder, file, missing…; else ""
    size: int
    modified: datetime

    @property
    def hidden(self) -> bool:
        return self.name.startswith(".")

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder" or (self.kind == "link" and self.points_to == "folder")

    @property
    def is_file(self) -> bool:
        return self.kind == "file" or (self.kind == "link" and self.points_to == "file")

    @property
    def label(self) -> str:
        if self.kind != "link":
            return self.kind.capitalize()
        if self.points_to in ("folder", "file"):
            return f"Link to a {self.points_to}"
        return "Broken link"


@dataclass(frozen=True)
class Folder:
    path: str
    resolved: str
    entries: list[Entry]
    truncated: bool = False


@dataclass(frozen=True)
class Content:
    """A file's bytes exactly, with what `stat` said of it."""

    path: str
    resolved: str
    data: bytes
    size: int
    modified: datetime
    mode: int

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def version(self) -> str:
        """What a save compares against: the file is still this one only if its SHA-256 still matches."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Written:
    path: str
    resolved: str
    mode: int
    size: int
    modified: datetime


def home_of(cluster: Cluster, username: str) -> str:
    """Where provisioning made the person's home (useradd -d home_root/NAME)."""
    return posixpath.join(cluster.home_root, username)


def checked(cluster: Cluster, username: str, value: object) -> str:
    """`value` as a path in the person's home, judged as text; FileError otherwise (nothing is touched)."""
    if not isinstance(value, str) or not value:
        raise FileError("Give the path of a file or folder on the cluster.", code="invalid_path")
    try:
        path = paths.check(value)
    except paths.NotAHeadNodePath as e:
        sentence = {
            paths.NUL: "The path contains a NUL byte.",
            paths.CONTROL: "The path contains a control character.",
            paths.TOO_LONG: f"The path is longer than {paths.MAX_LENGTH} characters.",
            paths.RELATIVE: f"The path must be absolute (starting with /), not {value!r}.",
            paths.NOT_NORMALISED: f"The path {value!r} is not normalised (no '.', '..', '//' or trailing "
            f"'/'); open {e.normalised!r} if that is what you mean.",
        }[e.rule]
        raise FileError(sentence, code="invalid_path") from None
    home = home_of(cluster, username)
    if not inside(path, home):
        raise FileError(
            f"{path} is outside your home ({home}); the console opens only your own files.",
            code="outside_home",
            status=403,
            path=path,
        )
    return path


def inside(path: str, home: str) -> bool:
    return path == home or path.startswith(home.rstrip("/") + "/")


def child(folder: str, name: str) -> str:
    """The path of `name` in `folder`; FileError when the name is not one plain name."""
    if not name or name in (".", "..") or "/" in name:
        raise FileError(
            f"{name!r} is not a name for a file or folder (no '/', and not '.' or '..').", code="invalid_name"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise FileError("A name cannot contain a control character.", code="invalid_name")
    if len(name.encode()) > 255:
        raise FileError("A name can be at most 255 bytes long.", code="invalid_name")
    return posixpath.join(folder, name)


# --- the commands ------------------------------------------------------------------------------


def listing(cluster: Cluster, username: str, path: str) -> Folder:
    """What is in the folder `path` (checked with `checked` first), as the person sees it."""
    home = home_of(cluster, username)
    result = _run(cluster, username, LISTER, [path, home])
    if not result.ok:
        raise _failed(path, username, home, result, folder=path)
    resolved, _, rest = result.stdout.partition("\x00")
    fields = rest.split("\x00")
    entries = []
    for i in range(0, len(fields) - 4, 5):
        kind, target, size, mtime, name = fields[i : i + 5]
        entries.append(
            Entry(
                name=name,
                path=_usable(posixpath.join(path, name)),
                kind=KINDS.get(kind, "other"),
                points_to=KINDS.get(target, "missing") if kind == "l" else "",
                size=int(size) if size.isdigit() else 0,
                modified=_time(mtime),
            )
        )
        if len(entries) >= MAX_ENTRIES:
            return Folder(path, resolved, entries, truncated=True)
    return Folder(path, resolved, entries)


def read(cluster: Cluster, username: str, path: str, *, limit: int) -> Content:
    """The file's bytes, at most `limit` of them (FileError `too_large` above that)."""
    home = home_of(cluster, username)
    result = _run(cluster, username, READER, [path, home, str(limit)])
    if result.exit_code == TOO_LARGE:
        size = _info(result.stdout)[0]
        raise FileError(
            f"{path} is {size_words(size)}; at most {size_words(limit)} can be opened here. "
            "Use the terminal for bigger files.",
            code="too_large",
            status=413,
            path=path,
        )
    if not result.ok:
        raise _failed(path, username, home, result, folder=posixpath.dirname(path))
    resolved, _, rest = result.stdout.partition("\x00")
    _, _, encoded = rest.partition("\x00")
    size, mtime, mode = _info(result.stdout)
    try:
        data = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        data = b""
    if len(data) != size:
        raise FileError(
            f"{path} could not be read whole ({size_words(len(data))} of {size_words(size)} arrived): "
            "it changed while it was read, or the head node's answer was cut short. "
            "Try again, or use the terminal.",
            code="read_incomplete",
            status=502,
            path=path,
        )
    return Content(path, resolved, data, size, _time(mtime), int(mode, 8))


def text_of(content: Content) -> str:
    """The file as text for the editor; FileError when it is not UTF-8 text."""
    try:
        text = content.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise FileError(
            f"{content.path} is not a text file (it has NUL bytes or is not UTF-8), so the editor does not "
            "open it; download it instead.",
            code="not_text",
            status=415,
            path=content.path,
        )
    return text


def write(
    cluster: Cluster, username: str, path: str, data: bytes, *, expect: str, mode: str = NEW_FILE_MODE
) -> Written:
    """Write `data` to `path` atomically as the person.

    `expect`: "new" (the name must be free), "any" (replace whatever file is there) or the
    `Content.version` the file must still have (else FileError `changed`, and nothing is written).
    `mode` (octal text) is for a new file; a file replaced keeps its own.
    """
    home = home_of(cluster, username)
    folder, name = posixpath.split(path)
    result = _run(cluster, username, WRITER, [folder, home, name, expect, mode], input=data)
    if not result.ok:
        raise _failed(path, username, home, result, folder=folder, writing=True)
    info, _, resolved = result.stdout.partition("\x00")
    parts = info.split()
    if len(parts) != 3:
        raise FileError(f"Writing {path} on the head node gave no answer.", code="not_written", status=502)
    return Written(path, resolved, int(parts[0], 8), int(parts[1]), _time(parts[2]))


def make_folder(cluster: Cluster, username: str, path: str) -> str:
    home = home_of(cluster, username)
    parent, name = posixpath.split(path)
    result = _run(cluster, username, MAKE_FOLDER, [parent, home, name, NEW_FOLDER_MODE])
    if not result.ok:
        raise _failed(path, username, home, result, folder=parent, writing=True)
    return result.stdout


# --- how a command runs, and what its answer means ---------------------------------------------


def _run(
    cluster: Cluster, username: str, script: str, args: list[str], *, input: bytes | None = None
) -> headnode.Result:
    try:
        argv = headnode.as_user(cluster, username, ["sh", "-c", script, "sh", *args])
    except headnode.UnknownUser as e:
        raise FileError(str(e), code="account_missing", status=502) from None
    try:
        return headnode.run(cluster, argv, timeout=TIMEOUT, input=input)
    except headnode.HeadNodeError as e:
        raise FileError(f"{e} Nothing was changed.", code="head_node_unreachable", status=502) from None


def _failed(
    path: str, username: str, home: str, result: headnode.Result, *, folder: str, writing: bool = False
) -> FileError:
    """The sentence for a command that did not do its part; `folder` is the folder it needed."""
    said = result.output()
    code = result.exit_code
    if code == OUTSIDE:
        resolved = result.stdout.split("\x00")[0]
        return FileError(
            f"{path} leads to {resolved}, which is outside your home ({home}); the console opens only "
            "your own files.",
            code="outside_home",
            status=403,
            path=path,
        )
    if code == NO_HOME:
        return FileError(
            f"Your home {home} is missing on the head node; ask an administrator.",
            code="no_home",
            status=502,
            path=path,
        )
    if "Permission denied" in said:
        verb = "write" if writing else "read"
        return FileError(
            f"{username} may not {verb} {path} (Permission denied).",
            code="permission_denied",
            status=403,
            path=path,
        )
    if code == NOT_FOUND:
        missing = folder if writing else path
        return FileError(
            f"No such file or folder: {missing} does not exist.", code="not_found", status=404, path=path
        )
    if code == NOT_A_FOLDER:
        return FileError(f"{folder} is not a folder.", code="not_a_folder", path=path)
    if code == NOT_A_FILE:
        return FileError(f"{path} is not a regular file.", code="not_a_file", path=path)
    if code == CHANGED:
        return FileError(
            f"{path} was changed by something else since you opened it, so it was not overwritten.",
            code="changed",
            status=409,
            path=path,
        )
    if code == GONE:
        return FileError(
            f"{path} was deleted or moved since you opened it, so nothing was written.",
            code="changed",
            status=409,
            path=path,
        )
    if code == EXISTS or "File exists" in said:
        return FileError(f"{path} already exists.", code="exists", status=409, path=path)
    if "runuser" in said and "does not exist" in said:
        return FileError(
            f"The account {username} is missing on the head node ({said}).",
            code="account_missing",
            status=502,
        )
    verb = "written" if writing else "read"
    return FileError(
        f"{path} could not be {verb} as {username}: {said or f'exit {code}'}.",
        code="not_written" if writing else "unreadable",
        status=400,
        path=path,
    )


def _usable(path: str) -> str:
    try:
        return paths.check(path) if "\ufffd" not in path else ""
    except paths.NotAHeadNodePath:
        return ""


def _info(stdout: str) -> tuple[int, str, str]:
    """size, mtime and mode from the reader's second field."""
    fields = stdout.split("\x00")
    parts = fields[1].split() if len(fields) > 1 else []
    if len(parts) != 3 or not parts[0].isdigit():
        return 0, "0", "0"
    return int(parts[0]), parts[1], parts[2]


def _time(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, tz=UTC)


def size_words(size: int) -> str:
    """A size as a person reads it: 512 bytes, 3.2 KiB, 10 MiB."""
    if size < 1024:
        return f"{size} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def max_edit_bytes() -> int:
    return settings.CLUSTERRA_MAX_EDIT_BYTES


def max_upload_bytes() -> int:
    return settings.CLUSTERRA_MAX_UPLOAD_BYTES


def max_download_bytes() -> int:
    return settings.CLUSTERRA_MAX_DOWNLOAD_BYTES
