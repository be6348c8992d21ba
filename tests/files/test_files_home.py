"""files.home: a person's home read and written as that person on the head node (this host, for real).

What must hold: the kernel decides with the person's own credentials (a file of root's in their home, or
another person's home, is refused even when our own path rule is lifted); files are written atomically,
owned by the person, with the modes the module promises; a link or `..` never leads out of the home; a
file changed since it was opened is not overwritten.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from clusters import headnode
from files import home as files
from files.home import FileError

pytestmark = [pytest.mark.django_db, pytest.mark.root]

LIMIT = 1024 * 1024


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_a_new_file_is_the_persons_with_the_mode_the_module_says(here, lee):
    path = str(lee.home / "notes.txt")
    written = files.write(here, lee.name, path, b"hello\n", expect="new", mode=files.NEW_FILE_MODE)
    made = Path(path).stat()
    assert (made.st_uid, made.st_gid) == (lee.uid, lee.uid)
    assert _mode(Path(path)) == 0o644 == written.mode
    assert Path(path).read_bytes() == b"hello\n"
    script = str(lee.home / "run.sh")
    files.write(here, lee.name, script, b"#!/bin/bash\n", expect="new", mode=files.NEW_SCRIPT_MODE)
    assert _mode(Path(script)) == 0o755
    assert Path(script).stat().st_uid == lee.uid
    # Nothing of the temporary file is left beside it.
    assert list(lee.home.glob(".clusterra-*")) == []


def test_saving_keeps_the_files_mode_and_replaces_it_whole(here, lee):
    path = Path(lee.script("keep.sh", "#!/bin/sh\necho one\n", mode=0o700))
    before = files.read(here, lee.name, str(path), limit=LIMIT)
    inode = path.stat().st_ino
    files.write(here, lee.name, str(path), b"#!/bin/sh\necho two\n", expect=before.version)
    assert path.read_text() == "#!/bin/sh\necho two\n"
    assert _mode(path) == 0o700
    assert path.stat().st_uid == lee.uid
    # A new inode: the text was written beside it and renamed over it, never truncated in place.
    assert path.stat().st_ino != inode


def test_a_file_changed_since_it_was_opened_is_not_overwritten(here, lee):
    path = Path(lee.script("race.sh", "#!/bin/sh\necho mine\n"))
    opened = files.read(here, lee.name, str(path), limit=LIMIT)
    assert opened.version == hashlib.sha256(b"#!/bin/sh\necho mine\n").hexdigest()
    path.write_text("#!/bin/sh\necho theirs\n")  # someone else (a job, the terminal) saves meanwhile
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(path), b"#!/bin/sh\necho stale\n", expect=opened.version)
    assert (caught.value.code, caught.value.status) == ("changed", 409)
    assert path.read_text() == "#!/bin/sh\necho theirs\n"
    # A file deleted meanwhile is not made again behind the person's back either.
    path.unlink()
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(path), b"x", expect=opened.version)
    assert caught.value.code == "changed"
    assert not path.exists()


def test_a_new_file_never_replaces_one_that_is_there(here, lee):
    path = Path(lee.script("taken.sh", "#!/bin/sh\n"))
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(path), b"other", expect="new")
    assert caught.value.code == "exists"
    assert path.read_text() == "#!/bin/sh\n"


def test_a_file_of_roots_in_the_home_is_refused_by_the_kernel(here, lee):
    # Every rule of ours passes (in the home, a regular file): only the kernel can say no.
    secret = Path(lee.script("root-only.txt", "secret\n", mode=0o600, owner=0))
    with pytest.raises(FileError) as caught:
        files.read(here, lee.name, str(secret), limit=LIMIT)
    assert (caught.value.code, caught.value.status) == ("permission_denied", 403)
    assert "Permission denied" in caught.value.message
    readonly = Path(lee.script("root-readable.txt", "as it was\n", mode=0o644, owner=0))
    opened = files.read(here, lee.name, str(readonly), limit=LIMIT)
    # Owning the folder, they could rename over it; the console asks the kernel whether they may write it.
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(readonly), b"changed\n", expect=opened.version)
    assert caught.value.code == "permission_denied"
    assert readonly.read_text() == "as it was\n"
    assert readonly.stat().st_uid == 0


def test_another_persons_home_is_refused_by_the_kernel_even_without_our_rule(here, lee, sam, monkeypatch):
    theirs = Path(sam.script("private.sh", "#!/bin/sh\necho sam\n", mode=0o644))
    # Our own rule first: the path is outside lee's home, refused before anything runs.
    with pytest.raises(FileError) as caught:
        files.checked(here, lee.name, str(theirs))
    assert caught.value.code == "outside_home"
    # Now lift it (every home counts as lee's): sam's home is 0700, so the kernel refuses lee.
    monkeypatch.setattr(files, "home_of", lambda cluster, username: "/home")
    with pytest.raises(FileError) as caught:
        files.read(here, lee.name, str(theirs), limit=LIMIT)
    assert caught.value.code == "permission_denied"
    with pytest.raises(FileError) as caught:
        files.listing(here, lee.name, str(sam.home))
    assert caught.value.code == "permission_denied"
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(sam.home / "planted.sh"), b"#!/bin/sh\n", expect="new")
    assert caught.value.code == "permission_denied"
    assert not (sam.home / "planted.sh").exists()
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(theirs), b"#!/bin/sh\necho lee\n", expect="any")
    assert caught.value.code == "permission_denied"
    assert theirs.read_text() == "#!/bin/sh\necho sam\n"
    # Even a home opened wide: the file itself is not lee's to write.
    sam.home.chmod(0o755)
    with pytest.raises(FileError) as caught:
        files.write(here, lee.name, str(theirs), b"#!/bin/sh\necho lee\n", expect="any")
    assert caught.value.code == "permission_denied"
    assert theirs.read_text() == "#!/bin/sh\necho sam\n"


@pytest.mark.parametrize(
    "value", ["/home/x/../y", "home/x", "/home/x/", "//home/x", "/home/x\n", "/home/x/\x00y"]
)
def test_a_path_that_is_not_plain_is_refused_before_anything_runs(here, lee, value, monkeypatch):
    monkeypatch.setattr(files, "_run", lambda *a, **k: pytest.fail("nothing may run for such a path"))
    value = value.replace("/home/x", str(lee.home))
    with pytest.raises(FileError) as caught:
        files.checked(here, lee.name, value)
    assert caught.value.code == "invalid_path"


def test_dot_dot_out_of_the_home_is_refused(here, lee):
    with pytest.raises(FileError) as caught:
        files.checked(here, lee.name, f"{lee.home}/../{lee.name}x/job.sh")
    assert caught.value.code == "invalid_path"
    assert "not normalised" in caught.value.message
    for outside in ("/etc/passwd", "/home", f"{lee.home}x/job.sh"):
        with pytest.raises(FileError) as caught:
            files.checked(here, lee.name, outside)
        assert caught.value.code == "outside_home", outside


@pytest.fixture
def outside(lee):
    """A folder outside the home that the person may write: only our rule keeps them out of it."""
    folder = Path(f"/tmp/ct-files-{lee.name}")
    folder.mkdir(mode=0o700)
    os.chown(folder, lee.uid, lee.uid)
    (folder / "target.sh").write_text("#!/bin/sh\necho outside\n")
    os.chown(folder / "target.sh", lee.uid, lee.uid)
    yield folder
    subprocess.run(["rm", "-rf", "--", str(folder)], check=True)


def test_links_that_lead_out_of_the_home_are_refused_whatever_the_kernel_allows(here, lee, outside):
    (lee.home / "to-file.sh").symlink_to(outside / "target.sh")
    (lee.home / "to-folder").symlink_to(outside)
    (lee.home / "to-etc").symlink_to("/etc")
    for path, act in [
        (lee.home / "to-file.sh", lambda p: files.read(here, lee.name, p, limit=LIMIT)),
        (lee.home / "to-folder", lambda p: files.listing(here, lee.name, p)),
        (lee.home / "to-etc", lambda p: files.listing(here, lee.name, p)),
        (lee.home / "to-etc" / "hostname", lambda p: files.read(here, lee.name, p, limit=LIMIT)),
        (lee.home / "to-file.sh", lambda p: files.write(here, lee.name, p, b"#!/bin/sh\n", expect="any")),
        (
            lee.home / "to-folder" / "new.sh",
            lambda p: files.write(here, lee.name, p, b"#!/bin/sh\n", expect="new"),
        ),
        (lee.home / "to-folder" / "made", lambda p: files.make_folder(here, lee.name, p)),
    ]:
        with pytest.raises(FileError) as caught:
            act(str(path))
        assert caught.value.code == "outside_home", path
        assert "outside your home" in caught.value.message
    assert (outside / "target.sh").read_text() == "#!/bin/sh\necho outside\n"
    assert sorted(p.name for p in outside.iterdir()) == ["target.sh"]


def test_a_link_inside_the_home_is_followed_and_written_through(here, lee):
    target = Path(lee.script("real.sh", "#!/bin/sh\necho real\n", mode=0o750))
    (lee.home / "alias.sh").symlink_to(target)
    opened = files.read(here, lee.name, str(lee.home / "alias.sh"), limit=LIMIT)
    assert (opened.resolved, opened.data) == (str(target), b"#!/bin/sh\necho real\n")
    files.write(
        here, lee.name, str(lee.home / "alias.sh"), b"#!/bin/sh\necho edited\n", expect=opened.version
    )
    assert (lee.home / "alias.sh").is_symlink()
    assert target.read_text() == "#!/bin/sh\necho edited\n"
    assert _mode(target) == 0o750


def test_the_listing_says_what_each_name_is(here, lee):
    lee.script("b.sh", "#!/bin/sh\n")
    (lee.home / "A folder").mkdir()
    (lee.home / "to-etc").symlink_to("/etc")
    (lee.home / "broken").symlink_to("/nonexistent/ct")
    (lee.home / "bad\nname").write_text("x")
    folder = files.listing(here, lee.name, str(lee.home))
    found = {e.name: e for e in folder.entries}
    assert (found["b.sh"].kind, found["b.sh"].size) == ("file", len("#!/bin/sh\n"))
    assert (found["A folder"].is_folder, found["A folder"].path) == (True, f"{lee.home}/A folder")
    assert (found["to-etc"].label, found["broken"].label) == ("Link to a folder", "Broken link")
    assert found[".bashrc"].hidden
    # A name no path may hold is listed, but offers nothing to open.
    assert found["bad\nname"].path == ""


def test_binary_and_non_utf8_files_are_not_text(here, lee):
    for name, data in [("nul.bin", b"#!/bin/sh\n\x00\x01"), ("latin1.txt", "caf\xe9\n".encode("latin-1"))]:
        path = lee.home / name
        path.write_bytes(data)
        content = files.read(here, lee.name, str(path), limit=LIMIT)
        assert content.data == data  # read exactly, as a download needs it
        with pytest.raises(FileError) as caught:
            files.text_of(content)
        assert caught.value.code == "not_text"
        assert "is not a text file" in caught.value.message
    assert files.text_of(files.read(here, lee.name, lee.script("ok.sh", "#!/bin/sh\necho é\n"), limit=LIMIT))


def test_a_file_over_the_limit_is_not_read(here, lee):
    path = lee.script("big.txt", "x" * 5000)
    with pytest.raises(FileError) as caught:
        files.read(here, lee.name, path, limit=4096)
    assert (caught.value.code, caught.value.status) == ("too_large", 413)
    assert "is 4.9 KiB; at most 4 KiB can be opened here" in caught.value.message


def test_a_folder_is_made_as_the_person(here, lee):
    made = files.make_folder(here, lee.name, str(lee.home / "runs"))
    assert made == str(lee.home / "runs")
    assert (lee.home / "runs").stat().st_uid == lee.uid
    assert _mode(lee.home / "runs") == 0o755
    with pytest.raises(FileError) as caught:
        files.make_folder(here, lee.name, str(lee.home / "runs"))
    assert caught.value.code == "exists"
    with pytest.raises(FileError) as caught:
        files.make_folder(here, lee.name, str(lee.home / "missing" / "runs"))
    assert caught.value.code == "not_found"


def test_over_ssm_the_same_commands_run_through_runuser(here, lee, monkeypatch):
    """The line AWS-RunShellScript would run on a remote head node, run here by a real shell as root."""
    sent = []

    def run_the_line_here(cluster, argv, timeout, input):
        line = headnode.ssm_command_line(argv, input)
        sent.append(argv)
        done = subprocess.run(
            ["sh", "-c", line],
            capture_output=True,
            env=headnode.LOCAL_ENVIRONMENT,
            timeout=timeout,
            check=False,
        )
        return headnode.Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    monkeypatch.setattr(headnode, "_run_ssm", run_the_line_here)
    here.transport, here.ssm_instance_id, here.aws_region = "ssm", "i-0123456789abcdef0", "eu-west-1"
    path = f"{lee.home}/it's $(here).sh"
    files.write(here, lee.name, path, b"#!/bin/sh\necho remote\n", expect="new", mode=files.NEW_SCRIPT_MODE)
    assert Path(path).stat().st_uid == lee.uid
    assert files.read(here, lee.name, path, limit=LIMIT).data == b"#!/bin/sh\necho remote\n"
    assert "it's $(here).sh" in [e.name for e in files.listing(here, lee.name, str(lee.home)).entries]
    assert {tuple(argv[:5]) for argv in sent} == {("runuser", "-u", lee.name, "--", "sh")}
    secret = lee.script("root-only.txt", "secret\n", mode=0o600, owner=0)
    with pytest.raises(FileError) as caught:
        files.read(here, lee.name, secret, limit=LIMIT)
    assert caught.value.code == "permission_denied"
