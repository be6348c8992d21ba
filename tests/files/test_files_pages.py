"""The file pages through the test client, on this host for real: browse, edit, save, new, upload, download.

Who may use them is the policy's answer (a grant to submit or to open the terminal); every write is
audited and no read is; every refusal is a sentence on a page, never a 500; every POST needs its CSRF token.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from access.models import Grant
from audit.models import AuditEvent
from files import home as files

pytestmark = [pytest.mark.django_db, pytest.mark.root]

BASE = "/clusters/here/files/"


@pytest.fixture
def as_lee(client, lee):
    client.force_login(lee.user)
    return client


def _version(page: str) -> str:
    return re.search(r'name="version" value="([0-9a-f]{64})"', page).group(1)


def _textarea(page: str) -> str:
    return unescape(re.search(r"<textarea[^>]*>\n?(.*?)</textarea>", page, re.S).group(1))


def _writes() -> list[tuple[str, str, str]]:
    return list(
        AuditEvent.objects.filter(action__startswith="files.")
        .order_by("id")
        .values_list("action", "target", "outcome")
    )


# --- who may -------------------------------------------------------------------------------------


def test_the_pages_need_a_sign_in(client, here):
    for page in ("", "edit?path=/home/x/a", "new", "upload", "download?path=/home/x/a"):
        answer = client.get(BASE + page)
        assert answer.status_code == 302
        assert "/login" in answer["Location"]


def test_a_person_without_a_grant_gets_the_policys_sentence(client, make, here):
    stranger = make(grant=False)
    client.force_login(stranger.user)
    answer = client.get(BASE)
    assert answer.status_code == 403
    assert "You have no access to This host; ask an administrator for a grant." in answer.content.decode()
    refused = AuditEvent.objects.get(outcome="denied")
    assert (refused.action, refused.reason, refused.actor) == ("files.open", "no_grant", stranger.user)


def test_a_terminal_only_grant_is_enough(client, make, here):
    shell_only = make(grant=False)
    Grant.objects.create(cluster=here, user=shell_only.user, terminal=True)
    client.force_login(shell_only.user)
    assert client.get(BASE).status_code == 200


def test_an_unknown_cluster_is_not_found(as_lee):
    assert as_lee.get("/clusters/nowhere/files/").status_code == 404


# --- browse --------------------------------------------------------------------------------------


def test_the_home_is_listed_folders_first_with_hidden_files_on_request(as_lee, lee):
    lee.script("b.sh", "#!/bin/sh\n")
    lee.script("A.txt", "a\n")
    (lee.home / "zeta").mkdir()
    page = as_lee.get(BASE).content.decode()
    names = re.findall(r'<tr data-name="([^"]+)"', page)
    assert names == ["zeta", "A.txt", "b.sh"]
    assert f'href="/clusters/here/files/edit?path={quote(str(lee.home / "b.sh"), safe="")}"' in page
    assert 'data-label="Modified"><time datetime=' in page
    assert "Show hidden files (" in page
    assert 'id="up"' not in page  # the home is the top

    shown = as_lee.get(BASE, {"hidden": "1"}).content.decode()
    assert ".bashrc" in re.findall(r'<tr data-name="([^"]+)"', shown)
    assert "Hide hidden files" in shown


def test_a_subfolder_has_breadcrumbs_and_a_way_up(as_lee, lee):
    (lee.home / "runs" / "may").mkdir(parents=True)
    page = as_lee.get(BASE, {"path": str(lee.home / "runs" / "may")}).content.decode()
    assert '<span aria-current="page">may</span>' in page
    assert f'<a href="?path={quote(str(lee.home / "runs"), safe="")}">runs</a>' in page
    assert f'<a href="?path={quote(str(lee.home), safe="")}">Home</a>' in page
    assert 'id="up"' in page
    assert "This folder is empty" in page


def test_a_file_given_to_browse_opens_in_the_editor(as_lee, lee):
    path = lee.script("x.sh", "#!/bin/sh\n")
    answer = as_lee.get(BASE, {"path": path})
    assert answer.status_code == 302
    assert answer["Location"].startswith(BASE + "edit?path=")


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/etc", 403, "is outside your home"),
        ("{home}/../root", 400, "is not normalised"),
        ("{home}/missing", 404, "No such file or folder"),
        ("relative/path", 400, "must be absolute"),
    ],
)
def test_paths_that_cannot_be_browsed_say_why(as_lee, lee, path, status, words):
    answer = as_lee.get(BASE, {"path": path.format(home=lee.home)})
    assert answer.status_code == status
    assert words in answer.content.decode()


def test_a_link_out_of_the_home_is_refused_with_where_it_leads(as_lee, lee):
    (lee.home / "etc").symlink_to("/etc")
    answer = as_lee.get(BASE, {"path": str(lee.home / "etc")})
    assert answer.status_code == 403
    assert f"{lee.home}/etc leads to /etc, which is outside your home" in answer.content.decode()
    answer = as_lee.get(BASE + "edit", {"path": str(lee.home / "etc" / "hostname")})
    assert answer.status_code == 403


# --- the editor ----------------------------------------------------------------------------------


def test_a_file_is_opened_and_saved_as_the_person_with_its_line_endings(as_lee, lee, here):
    path = Path(lee.script("job.sh", "#!/bin/bash\necho one\n", mode=0o700))
    page = as_lee.get(BASE + "edit", {"path": str(path)}).content.decode()
    assert _textarea(page) == "#!/bin/bash\necho one\n"
    assert "mode 0700" in page
    # A browser sends a textarea's line breaks as CRLF; a Unix script must not get them.
    answer = as_lee.post(
        f"{BASE}edit?path={quote(str(path))}",
        {"text": "#!/bin/bash\r\necho two\r\n", "version": _version(page), "line_endings": "lf"},
    )
    assert answer.status_code == 302
    assert path.read_bytes() == b"#!/bin/bash\necho two\n"
    assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (lee.uid, 0o700)
    assert _writes() == [("files.saved", str(path), "allowed")]
    # A file written with CRLF keeps them.
    dos = Path(lee.script("dos.txt", "a\r\nb\r\n"))
    page = as_lee.get(BASE + "edit", {"path": str(dos)}).content.decode()
    as_lee.post(
        f"{BASE}edit?path={quote(str(dos))}",
        {"text": "a\r\nc\r\n", "version": _version(page), "line_endings": "crlf"},
    )
    assert dos.read_bytes() == b"a\r\nc\r\n"


def test_reads_are_not_audited(as_lee, lee):
    path = lee.script("look.sh", "#!/bin/sh\n")
    as_lee.get(BASE)
    as_lee.get(BASE + "edit", {"path": path})
    as_lee.get(BASE + "download", {"path": path})
    assert _writes() == []


def test_a_file_changed_meanwhile_is_not_overwritten_and_the_text_is_kept(as_lee, lee, here):
    path = Path(lee.script("shared.sh", "#!/bin/sh\necho first\n"))
    page = as_lee.get(BASE + "edit", {"path": str(path)}).content.decode()
    path.write_text("#!/bin/sh\necho changed in the terminal\n")
    mine = "#!/bin/sh\necho my edit\n"
    answer = as_lee.post(
        f"{BASE}edit?path={quote(str(path))}", {"text": mine, "version": _version(page), "line_endings": "lf"}
    )
    html = answer.content.decode()
    assert answer.status_code == 409
    assert "was changed by something else since you opened it, so it was not overwritten" in html
    assert _textarea(html) == mine
    assert path.read_text() == "#!/bin/sh\necho changed in the terminal\n"
    assert _writes() == [("files.saved", str(path), "denied")]
    # "Save mine anyway" carries the version now on disk; it replaces that one and no later one.
    current = re.search(r'name="overwrite" value="([0-9a-f]{64})"', html).group(1)
    assert current == files.read(here, lee.name, str(path), limit=4096).version
    answer = as_lee.post(
        f"{BASE}edit?path={quote(str(path))}",
        {"text": mine, "version": _version(page), "line_endings": "lf", "overwrite": current},
    )
    assert answer.status_code == 302
    assert path.read_text() == mine


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"\x7fELF\x02\x01\x01\x00\x00", 415, "is not a text file (it has NUL bytes or is not UTF-8)"),
        (b"x" * 3000, 413, "at most 2 KiB can be opened here"),
    ],
)
def test_binary_and_big_files_are_not_opened_in_the_editor(as_lee, lee, settings, data, status, words):
    settings.CLUSTERRA_MAX_EDIT_BYTES = 2048
    path = lee.home / "thing"
    path.write_bytes(data)
    answer = as_lee.get(BASE + "edit", {"path": str(path)})
    html = answer.content.decode()
    assert answer.status_code == status
    assert words in html
    assert "Download it" in html
    assert "<textarea" not in html


def test_the_submit_link_shows_only_for_files_under_the_script_roots(as_lee, lee, here):
    path = lee.script("run.sh", "#!/bin/sh\n")
    page = as_lee.get(BASE + "edit", {"path": path}).content.decode()
    assert f'href="/clusters/here/submit/?script_path={quote(path, safe="")}" id="submit-this-file"' in page
    notes = lee.script("notes.txt", "not a script\n")
    assert "submit-this-file" not in as_lee.get(BASE + "edit", {"path": notes}).content.decode()
    here.allowed_script_roots = "/srv/ct-scripts"
    here.save()
    page = as_lee.get(BASE + "edit", {"path": path}).content.decode()
    assert "submit-this-file" not in page
    assert "Only files under /srv/ct-scripts can be submitted" in page


def test_a_file_the_person_may_not_write_is_refused_with_permission_denied(as_lee, lee):
    path = Path(lee.script("locked.sh", "#!/bin/sh\n", mode=0o644, owner=0))
    page = as_lee.get(BASE + "edit", {"path": str(path)}).content.decode()
    answer = as_lee.post(
        f"{BASE}edit?path={quote(str(path))}",
        {"text": "#!/bin/sh\necho no\n", "version": _version(page), "line_endings": "lf"},
    )
    assert answer.status_code == 403
    assert f"{lee.name} may not write {path} (Permission denied)." in answer.content.decode()
    assert path.read_text() == "#!/bin/sh\n"


# --- new file or folder --------------------------------------------------------------------------


def test_a_new_script_starts_with_bash_and_sbatch_lines_and_can_be_run(as_lee, lee):
    answer = as_lee.post(f"{BASE}new?path={quote(str(lee.home))}", {"name": "My run.sh", "kind": "script"})
    path = lee.home / "My run.sh"
    assert answer.status_code == 302
    assert answer["Location"] == f"{BASE}edit?{urlencode({'path': str(path)})}"
    text = path.read_text()
    assert text.startswith("#!/bin/bash\n#SBATCH --job-name=My-run\n#SBATCH --time=10\n")
    assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (lee.uid, 0o755)
    assert _writes() == [("files.created", str(path), "allowed")]
    again = as_lee.post(f"{BASE}new?path={quote(str(lee.home))}", {"name": "My run.sh", "kind": "file"})
    assert again.status_code == 409
    assert "already exists" in again.content.decode()
    assert path.read_text() == text


def test_a_new_folder_and_an_empty_file(as_lee, lee):
    as_lee.post(f"{BASE}new?path={quote(str(lee.home))}", {"name": "data", "kind": "folder"})
    assert (lee.home / "data").is_dir()
    as_lee.post(f"{BASE}new?path={quote(str(lee.home / 'data'))}", {"name": "notes.txt", "kind": "file"})
    notes = lee.home / "data" / "notes.txt"
    assert (notes.read_bytes(), notes.stat().st_mode & 0o777, notes.stat().st_uid) == (b"", 0o644, lee.uid)


@pytest.mark.parametrize("name", ["a/b", "..", ".", "tab\there"])
def test_a_name_that_is_not_one_plain_name_is_refused(as_lee, lee, name):
    answer = as_lee.post(f"{BASE}new?path={quote(str(lee.home))}", {"name": name, "kind": "file"})
    assert answer.status_code == 400
    assert 'class="field-error"' in answer.content.decode()
    assert _writes() == []


# --- upload and download -------------------------------------------------------------------------


def test_an_upload_is_written_as_the_person_and_never_replaces_unasked(as_lee, lee):
    url = f"{BASE}upload?path={quote(str(lee.home))}"
    answer = as_lee.post(url, {"file": SimpleUploadedFile("data.csv", b"a,b\n1,2\n")})
    assert answer.status_code == 302
    uploaded = lee.home / "data.csv"
    assert (uploaded.read_bytes(), uploaded.stat().st_uid) == (b"a,b\n1,2\n", lee.uid)
    again = as_lee.post(url, {"file": SimpleUploadedFile("data.csv", b"new")})
    assert again.status_code == 409
    assert "already exists; tick" in again.content.decode()
    assert uploaded.read_bytes() == b"a,b\n1,2\n"
    as_lee.post(url, {"file": SimpleUploadedFile("data.csv", b"new"), "replace": "on"})
    assert uploaded.read_bytes() == b"new"
    assert [a for a, _, _ in _writes()] == ["files.uploaded"] * 3
    assert [o for _, _, o in _writes()] == ["allowed", "denied", "allowed"]


def test_an_upload_over_the_limit_is_refused_before_anything_is_written(as_lee, lee, settings, monkeypatch):
    settings.CLUSTERRA_MAX_UPLOAD_BYTES = 1000
    monkeypatch.setattr(files, "write", lambda *a, **k: pytest.fail("nothing may be written"))
    answer = as_lee.post(
        f"{BASE}upload?path={quote(str(lee.home))}", {"file": SimpleUploadedFile("big.bin", b"x" * 1001)}
    )
    assert answer.status_code == 413
    assert "The file is larger than 1000 bytes, the most an upload may be" in answer.content.decode()
    assert not (lee.home / "big.bin").exists()
    assert _writes() == [("files.uploaded", str(lee.home), "denied")]


def test_a_download_is_an_attachment_of_the_exact_bytes(as_lee, lee):
    page = lee.home / "page.html"
    page.write_bytes(b"<script>alert(1)</script>\x00\xff")
    answer = as_lee.get(BASE + "download", {"path": str(page)})
    assert answer.status_code == 200
    assert answer.content == b"<script>alert(1)</script>\x00\xff"
    assert answer["Content-Type"] == "application/octet-stream"
    assert answer["Content-Disposition"] == 'attachment; filename="page.html"'
    assert answer["X-Content-Type-Options"] == "nosniff"
    odd = lee.home / 'naïve "q".txt'
    odd.write_bytes(b"x")
    answer = as_lee.get(BASE + "download", {"path": str(odd)})
    assert answer["Content-Disposition"].startswith("attachment; filename*=utf-8''")


def test_a_download_over_the_limit_or_of_someone_elses_file_is_a_sentence(as_lee, lee, sam, settings):
    settings.CLUSTERRA_MAX_DOWNLOAD_BYTES = 10
    big = lee.script("big.txt", "x" * 11)
    answer = as_lee.get(BASE + "download", {"path": big})
    assert answer.status_code == 413
    assert "at most 10 bytes can be opened here" in answer.content.decode()
    theirs = sam.script("theirs.txt", "sam's")
    answer = as_lee.get(BASE + "download", {"path": theirs})
    assert answer.status_code == 403
    assert "is outside your home" in answer.content.decode()


# --- CSRF ----------------------------------------------------------------------------------------


def test_every_post_needs_its_csrf_token(lee):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(lee.user)
    path = Path(lee.script("safe.sh", "#!/bin/sh\n"))
    home = quote(str(lee.home))
    posts = [
        (f"{BASE}edit?path={quote(str(path))}", {"text": "x", "version": "0" * 64, "line_endings": "lf"}),
        (f"{BASE}new?path={home}", {"name": "forged.sh", "kind": "script"}),
        (f"{BASE}upload?path={home}", {"file": SimpleUploadedFile("forged.txt", b"x")}),
    ]
    for url, data in posts:
        assert strict.post(url, data).status_code == 403, url
    assert path.read_text() == "#!/bin/sh\n"
    assert not (lee.home / "forged.sh").exists()
    assert not (lee.home / "forged.txt").exists()
    # With the token the same upload goes through, so the refusals above were the token's.
    form = strict.get(f"{BASE}upload?path={home}").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    answer = strict.post(
        f"{BASE}upload?path={home}",
        {"file": SimpleUploadedFile("forged.txt", b"x"), "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 302
