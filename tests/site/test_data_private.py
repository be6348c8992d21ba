"""The data folder is private from the first start, and an open one is refused by every entry point."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

# Journal, WAL and shared-memory files exist only while SQLite writes: the console's own connection
# (manage.py shell) writes, looks at their modes while they are there, and prints them.
WRITE_AND_LOOK = """
import json, os
from django.db import connection, transaction
name = str(connection.settings_dict["NAME"])
mode = lambda path: f"{os.stat(path).st_mode & 0o777:o}"
seen = {}
with transaction.atomic():
    connection.cursor().execute("CREATE TABLE ct_journal (x)")
    seen["journal"] = mode(name + "-journal")
with connection.cursor() as cursor:
    cursor.execute("PRAGMA journal_mode=wal")
    cursor.execute("INSERT INTO ct_journal VALUES (1)")
    seen["wal"], seen["shm"] = mode(name + "-wal"), mode(name + "-shm")
print(json.dumps(seen))
"""


def console_env(data: Path) -> dict[str, str]:
    """The console with its embedded defaults (SQLite, a generated key) and its data folder at `data`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLUSTERRA_", "DJANGO_")) and k != "DATABASE_URL"
    }
    return env | {"CLUSTERRA_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "clusterra_site.settings"}


def run(data: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=console_env(data),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):o}"


def test_the_first_start_makes_the_folder_0700_and_the_database_and_key_0600(tmp_path):
    data = tmp_path / "clusterra" / "data"

    migrated = run(data, "manage.py", "migrate", "--no-input", "-v", "0")

    assert migrated.returncode == 0, migrated.stderr
    database = data / "clusterra.sqlite3"
    assert (mode(data), mode(database), mode(data / "secret_key")) == ("700", "600", "600")
    assert database.stat().st_size > 0  # the file made before SQLite opened it is the database it filled
    looked = run(data, "manage.py", "shell", "-c", WRITE_AND_LOOK)
    assert looked.returncode == 0, looked.stderr
    files = json.loads(looked.stdout.strip().splitlines()[-1])
    assert files == {"journal": "600", "wal": "600", "shm": "600"}
    print(
        "data at rest: folder 700, database 600, journal 600, WAL 600, shared memory 600, "
        "secret key 600 from the first migrate"
    )


def test_an_open_folder_is_refused_by_every_entry_point_with_the_command_that_fixes_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    entry_points = {
        "manage.py check": ["manage.py", "check"],
        "migrate": ["manage.py", "migrate", "--no-input"],
        "the sync loop": ["manage.py", "sync_jobs", "--once"],
        "the web server's application": ["-c", "import clusterra_site.asgi"],
    }
    for what, argv in entry_points.items():
        refused = run(data, *argv)
        assert refused.returncode != 0, what
        assert f"The data folder {data} is open to other users (mode 755)" in refused.stderr, what
        assert f"chmod 700 {data}" in refused.stderr, what
    assert refused.stderr.strip().endswith(f"make it private: chmod 700 {data}")
    # From manage.py a sentence, not a traceback.
    assert run(data, "manage.py", "check").stderr.strip().count("\n") == 0
    assert list(data.iterdir()) == []

    for open_mode in (0o750, 0o705, 0o701):
        data.chmod(open_mode)
        assert run(data, "manage.py", "check").returncode != 0, f"{open_mode:o}"
    data.chmod(0o700)
    assert run(data, "manage.py", "check").returncode == 0
    print(f"open data folder: refused by {', '.join(entry_points)}; 0 files written")
