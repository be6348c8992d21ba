"""jobs.scripts: which script paths are accepted, and reading one as its owner on this host (setpriv).

Decisions tested here: symbolic links are followed (sbatch follows them too), but the
resolved file must also be under one of the cluster's roots; the kernel decides who may
read, with every credential the person has (supplementary groups, ACLs); a remote head
node is still asked through runuser.
"""

from __future__ import annotations

import os
import secrets
import struct
import subprocess
from pathlib import Path

import pytest

from accounts.models import User
from clusters import headnode
from clusters.models import Cluster
from jobs import scripts
from jobs.scripts import ScriptError
from tests.conftest import require

pytestmark = pytest.mark.django_db


@pytest.fixture
def cluster(db) -> Cluster:
    return Cluster.objects.create(
        slug="here",
        name="This host",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref="/nonexistent",
        has_accounting=False,
        allowed_script_roots="/home\n/srv/ct-scripts",
    )


# --- the path as text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/home/ada/job.sh", "/home/ada/a b/job.sh", "/srv/ct-scripts/x.sh", "/home/ada/.hidden/job.sh"],
)
def test_absolute_normalised_paths_under_a_root_are_accepted(cluster, path):
    assert scripts.validate(cluster, path) == path


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("home/ada/job.sh", "invalid_path"),
        ("/home/ada/../bob/job.sh", "invalid_path"),
        ("/home/ada/", "invalid_path"),
        ("//home/ada/job.sh", "invalid_path"),
        ("/home/ada\x00/job.sh", "invalid_path"),
        ("/home/ada/\x1b[31mjob.sh", "invalid_path"),
        ("/" + "a" * 5000, "invalid_path"),
        ("/srv/ct-scripts-evil/x.sh", "path_outside_roots"),
        ("/etc/shadow", "path_outside_roots"),
        ("/home", "path_outside_roots"),
    ],
)
def test_other_paths_are_refused_before_any_file_is_touched(cluster, path, code):
    with pytest.raises(ScriptError) as caught:
        scripts.validate(cluster, path)
    assert caught.value.code == code
    assert caught.value.status == 400


def test_a_root_of_slash_allows_every_absolute_path(cluster):
    cluster.allowed_script_roots = "/"
    assert scripts.validate(cluster, "/opt/x.sh") == "/opt/x.sh"


# --- reading as the user, for real --------------------------------------------------------------


def test_it_reads_the_script_as_its_owner(cluster, owner):
    path = owner.script("ok.sh", "#!/bin/sh\n#SBATCH -t 5\necho hi\n", mode=0o600)
    script = scripts.read_as(cluster, owner.name, path)
    assert script.text == "#!/bin/sh\n#SBATCH -t 5\necho hi\n"
    assert (script.path, script.resolved_path, script.folder) == (path, path, str(owner.home))


def test_a_file_of_someone_else_with_mode_0600_is_permission_denied(cluster, owner):
    path = owner.script("root-only.sh", "#!/bin/sh\n", mode=0o600, owner=0)
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, owner.name, path)
    assert (caught.value.code, caught.value.status) == ("script_unreadable", 403)
    assert f"{owner.name} may not read {path} (Permission denied)" in caught.value.message


def test_a_folder_the_user_cannot_enter_is_permission_denied(cluster, owner):
    folder = Path("/srv/ct-scripts") / owner.name
    folder.mkdir(parents=True, exist_ok=True)
    try:
        folder.chmod(0o700)
        (folder / "x.sh").write_text("#!/bin/sh\n")
        with pytest.raises(ScriptError) as caught:
            scripts.read_as(cluster, owner.name, str(folder / "x.sh"))
        assert caught.value.status == 403
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_a_link_out_of_the_roots_is_refused_but_one_inside_is_followed(cluster, owner):
    out = owner.home / "escape.sh"
    out.symlink_to("/etc/hostname")
    inside = owner.home / "alias.sh"
    target = owner.script("real.sh", "#!/bin/sh\necho real\n")
    inside.symlink_to(target)
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, owner.name, str(out))
    assert caught.value.code == "path_outside_roots"
    assert "is a link to /etc/hostname" in caught.value.message
    script = scripts.read_as(cluster, owner.name, str(inside))
    assert (script.path, script.resolved_path, script.text) == (str(inside), target, "#!/bin/sh\necho real\n")


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda home: None, "script_not_found", "does not exist on the cluster"),
        (lambda home: (home / "thing.sh").mkdir(), "script_invalid", "is not a regular file"),
        (lambda home: os.mkfifo(home / "thing.sh"), "script_invalid", "is not a regular file"),
        (
            lambda home: (home / "thing.sh").write_text("echo no shebang\n"),
            "script_invalid",
            "does not start with '#!'",
        ),
        (lambda home: (home / "thing.sh").write_text(""), "script_invalid", "is empty"),
        (
            lambda home: (home / "thing.sh").write_bytes(b"#!/bin/sh\n\x00\x01"),
            "script_invalid",
            "not a text file",
        ),
    ],
)
def test_what_cannot_be_a_job_script_is_refused_with_a_reason(cluster, owner, make, code, words):
    make(owner.home)
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, owner.name, str(owner.home / "thing.sh"))
    assert caught.value.code == code
    assert words in caught.value.message


def test_a_script_over_the_size_cap_is_refused(cluster, owner, settings):
    settings.CLUSTERRA_MAX_SCRIPT_BYTES = 64
    path = owner.script("big.sh", "#!/bin/sh\n" + "echo 0123456789\n" * 10)
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, owner.name, path)
    assert caught.value.code == "script_too_large"


def test_the_working_directory_must_exist_and_be_enterable(cluster, owner):
    scripts.check_directory(cluster, owner.name, str(owner.home))
    with pytest.raises(ScriptError, match="does not exist"):
        scripts.check_directory(cluster, owner.name, str(owner.home / "missing"))
    closed = Path("/srv/ct-scripts") / f"{owner.name}-closed"
    closed.mkdir(mode=0o700, parents=True)
    try:
        with pytest.raises(ScriptError, match="may not enter"):
            scripts.check_directory(cluster, owner.name, str(closed))
    finally:
        closed.rmdir()


def test_an_unknown_account_is_not_taken_for_a_missing_file(cluster, db):
    require(os.geteuid() == 0, "needs root to read as another user")
    User.objects.create(username="nobody-here")
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, "ctnosuchuser", "/home/ctnosuchuser/x.sh")
    assert caught.value.code == "account_missing"
    assert caught.value.status == 502


# --- every credential of the person counts, as it would for sbatch ------------------------------


@pytest.fixture
def team(owner, uid_block):
    """A Linux group the owner is a supplementary member of (their primary group is their own)."""
    name = f"ct{secrets.token_hex(3)}"
    subprocess.run(["groupadd", "-g", str(uid_block + 19), name], check=True, capture_output=True)
    subprocess.run(["usermod", "-a", "-G", name, owner.name], check=True, capture_output=True)
    yield uid_block + 19
    subprocess.run(["groupdel", "-f", name], check=False, capture_output=True)


def test_a_file_of_one_of_the_persons_groups_is_read(cluster, owner, team):
    shared = owner.script("shared.sh", "#!/bin/sh\necho team\n", mode=0o640, owner=0)
    os.chown(shared, 0, team)
    assert scripts.read_as(cluster, owner.name, shared).text == "#!/bin/sh\necho team\n"
    # The same mode with a group they are not in: the group bits no longer apply to them.
    other = owner.script("other.sh", "#!/bin/sh\n", mode=0o640, owner=0)
    with pytest.raises(ScriptError) as caught:
        scripts.read_as(cluster, owner.name, other)
    assert caught.value.status == 403


def _acl(*entries: tuple[int, int, int]) -> bytes:
    # The kernel's system.posix_acl_access layout (version 2, then tag/perm/id per entry), so
    # the test needs no setfacl; entries in tag order, ids only on named users and groups.
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_an_acl_that_names_the_person_lets_them_read_a_file_of_someone_else(cluster, owner):
    path = owner.script("acl.sh", "#!/bin/sh\necho acl\n", mode=0o600, owner=0)
    with pytest.raises(ScriptError):
        scripts.read_as(cluster, owner.name, path)
    anyone = 0xFFFFFFFF
    user_obj, named_user, group_obj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
    try:
        os.setxattr(
            path,
            "system.posix_acl_access",
            _acl(
                (user_obj, 6, anyone),
                (named_user, 4, owner.uid),
                (group_obj, 0, anyone),
                (mask, 4, anyone),
                (other, 0, anyone),
            ),
        )
    except OSError as e:
        pytest.skip(f"this file system keeps no POSIX ACLs ({e.strerror})")
    assert scripts.read_as(cluster, owner.name, path).text == "#!/bin/sh\necho acl\n"


def test_an_ssm_head_node_reads_through_runuser(monkeypatch):
    remote = Cluster(
        slug="far", name="Far", transport="ssm", allowed_script_roots="/home", ssm_instance_id="i-0"
    )
    asked = []

    def head_node(cluster, argv, *, timeout=None, input=None):
        asked.append(argv)
        return headnode.Result(0, "/home/ada/job.sh\x00#!/bin/sh\necho far\n", "")

    monkeypatch.setattr(headnode, "run", head_node)
    script = scripts.read_as(remote, "ada", "/home/ada/job.sh")
    assert script.text == "#!/bin/sh\necho far\n"
    assert asked[0][:6] == ["runuser", "-u", "ada", "--", "sh", "-c"]
    assert asked[0][-2:] == ["/home/ada/job.sh", str(scripts.max_script_bytes() + 1)]
