"""Backups that restore: deploy/backup.sh, a fresh database, deploy/restore.sh, the console serving the same.

The console's own code fills PostgreSQL (people provisioned on the real Slurm, a grant and a quota, a job
submitted and settled, refusals, a recorded terminal session, a sealed IdP token, a staff session); the
backup is restored into a new database owned by another role, and a web worker started on it answers /v1, the
recording and the audit log as the old one did.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests
from django.db import connection
from django.test import Client
from django.utils import timezone
from psycopg import sql

from accounts import idp_check
from accounts.models import User
from audit.models import AuditEvent
from jobs.models import JobRecord
from terminal.models import TerminalSession
from terminal.recording import Recorder, relative_path
from tests.conftest import REPO, require
from tests.support import live_server
from tests.support.jobs_support import HELLO, sync_until

pytestmark = pytest.mark.postgres

BACKUP = REPO / "deploy" / "backup.sh"
RESTORE = REPO / "deploy" / "restore.sh"
# Settings of the console's own that must not leak from the test's environment into the scripts or the worker.
OWN_PREFIXES = ("CLUSTERRA_", "DJANGO_", "DATABASE_URL", "REDIS_URL", "PGPASSWORD")


@pytest.fixture
def postgres_tools():
    """PostgreSQL and its client tools, checked before the other fixtures make people on the cluster."""
    require(connection.vendor == "postgresql", "backups are of PostgreSQL: set DATABASE_URL")
    for tool in ("pg_dump", "pg_restore", "psql"):
        require(shutil.which(tool) is not None, f"{tool} is missing: apt-get install postgresql-client")


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.django_db(transaction=True)
def test_a_backup_restores_into_a_fresh_database_and_the_console_serves_the_same(
    postgres_tools, people, client, settings, tmp_path
):
    recordings = tmp_path / "recordings"
    settings.CLUSTERRA_RECORDINGS_DIR = recordings
    db = connection.settings_dict
    # With trust authentication a password is never asked for; one is put in the URL all the same, to show
    # that neither script prints it.
    password = db["PASSWORD"] or f"never-printed-{secrets.token_hex(4)}"
    source_url = url_of(db["USER"], password, db["HOST"], db["PORT"], db["NAME"])

    # --- the old server: filled by the console's own code ---
    ada = people(quota={"cpu_hours": 10, "max_running_jobs": 2})
    bob = people(grant=False)
    submitted = submit(client, ada, {"script_path": ada.script("hello.sh", HELLO)})
    assert submitted.status_code == 201, submitted.content
    job_id = submitted.json()["job"]["id"]
    record = sync_until(JobRecord.objects.get(slurm_job_id=job_id, cluster__slug="demo"), {"COMPLETED"})
    too_long = submit(
        client, ada, {"script_path": ada.script("long.sh", HELLO), "partition": "cpu", "time_limit": 2000}
    )
    assert too_long.status_code == 403, too_long.content  # more CPU-hours than her quota: refused
    assert submit(client, bob, {"script_path": bob.script("hello.sh", HELLO)}).status_code == 403
    idp_check.remember(ada.user, "test-idp", f"refresh-{secrets.token_hex(8)}")
    session = TerminalSession.objects.create(
        person=ada.user,
        person_name=ada.user.username,
        cluster=record.cluster,
        cluster_slug="demo",
        posix_user=ada.name,
        transport="local",
    )
    recorder = Recorder(
        relative_path("demo", session.pk, ada.name, time.time()),
        cols=80,
        rows=24,
        title=f"{ada.name}@demo",
    )
    recorder.output("$ squeue --me\r\n  JOBID  état\r\n".encode())
    recorder.resize(120, 40)
    recorder.output(b"$ exit\r\n")
    TerminalSession.objects.filter(pk=session.pk).update(
        recording=recorder.finish(), ended=timezone.now(), end_reason="closed", bytes_out=40
    )
    admin = User.objects.create_superuser("backup-admin", "backup-admin@clusterra.test", secrets.token_hex(8))
    staff = Client()
    staff.force_login(admin)
    staff_cookie = staff.cookies["sessionid"].value
    assert AuditEvent.objects.filter(outcome="denied").count() >= 2

    routes = (
        "/v1/me",
        "/v1/clusters",
        "/v1/clusters/demo/jobs",
        f"/v1/clusters/demo/jobs/{job_id}",
        "/v1/clusters/demo/quota",
    )
    before = {
        (who.name, route): answer(client.get(route, **who.auth)) for who in (ada, bob) for route in routes
    }
    assert before[(ada.name, f"/v1/clusters/demo/jobs/{job_id}")][1]["job"]["state"] == "COMPLETED"
    assert before[(bob.name, f"/v1/clusters/demo/jobs/{job_id}")][0] == 404  # not his
    [quota] = before[(ada.name, "/v1/clusters/demo/quota")][1]["quotas"]
    assert (quota["scope"], quota["cpu_hours_limit"]) == ("you", 10)
    replay = staff.get(f"/terminal/sessions/{session.pk}/recording.cast")
    assert replay.status_code == 200
    original_cast = Path(session_recording(session.pk)).read_bytes()
    assert b"".join(replay.streaming_content) == original_cast
    old_tables = tables_of(source_url)
    old_last_event = last_event_of(source_url)

    # --- back up, then the old server is gone: its recordings folder too ---
    env_file = write_env(
        tmp_path / "old.env", source_url, settings.SECRET_KEY, tmp_path / "old-data", recordings
    )
    backed_up, backup_seconds = run([BACKUP, tmp_path / "backups"], env_file)
    assert backed_up.returncode == 0, backed_up.stderr
    [dump] = (tmp_path / "backups").glob("clusterra-*.dump")
    [tarball] = (tmp_path / "backups").glob("recordings-*.tar.gz")
    assert dump.name.removeprefix("clusterra-").removesuffix(".dump") == tarball.name.removeprefix(
        "recordings-"
    ).removesuffix(".tar.gz")
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    assert f"{len(old_tables)} tables" in backed_up.stdout
    assert tables_of(source_url) == old_tables  # a backup writes nothing
    old_recordings = recordings.rename(tmp_path / "old-recordings")

    # --- a new server: a fresh database owned by a role the old server never had ---
    suffix = secrets.token_hex(4)
    role, role_password = f"clusterra_restore_{suffix}", secrets.token_hex(12)
    fresh, wrong_key_db = f"clusterra_restored_{suffix}", f"clusterra_wrong_key_{suffix}"
    server = url_of(db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], "postgres")
    worker = None
    try:
        with psycopg.connect(server, autocommit=True) as admin_db:
            admin_db.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(role_password)
                )
            )
            for name in (fresh, wrong_key_db):
                admin_db.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(role))
                )
        restored_url = url_of(role, role_password, db["HOST"], db["PORT"], fresh)
        new_data = tmp_path / "new-data"
        new_env = write_env(tmp_path / "new.env", restored_url, settings.SECRET_KEY, new_data, recordings)

        restored, restore_seconds = run([RESTORE, dump, tarball], new_env)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "this code's migrations match the data" in restored.stdout
        assert (
            "reads the restored sessions (1 of 1 checked) and sealed IdP tokens (1 of 1)" in restored.stdout
        )
        for output in (backed_up, restored):
            assert password not in output.stdout + output.stderr
            assert role_password not in output.stdout + output.stderr

        # Every table, row for row, and every sequence where it was: new rows do not collide with old ones.
        new_tables = tables_of(restored_url)
        assert new_tables == old_tables
        assert sequences_of(restored_url) == sequences_of(source_url)
        assert last_event_of(restored_url) == old_last_event
        with psycopg.connect(restored_url) as c:
            owners = {
                o
                for (o,) in c.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            }
            assert owners == {role}  # --no-owner: the new server's role owns what it restored
            newest = c.execute("SELECT max(id) FROM audit_auditevent").fetchone()[0]
            # The audit log is still append-only in the restored database, for its owner too.
            for statement in (
                "UPDATE audit_auditevent SET message = 'rewritten' WHERE id = %s",
                "DELETE FROM audit_auditevent WHERE id = %s",
            ):
                with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"), c.transaction():
                    c.execute(statement, [newest])
        assert sorted(files_of(recordings)) == sorted(files_of(old_recordings))
        for relative, (mode, content) in files_of(old_recordings).items():
            assert files_of(recordings)[relative] == (mode, content), relative

        # A second restore into the now full database is refused and changes nothing.
        again, _ = run([RESTORE, dump], new_env)
        assert again.returncode == 1
        assert "is not empty" in again.stderr
        assert tables_of(restored_url) == new_tables

        # Under another secret key the data restores, but the script says what cannot be read.
        wrong_env = write_env(
            tmp_path / "wrong.env",
            url_of(role, role_password, db["HOST"], db["PORT"], wrong_key_db),
            secrets.token_urlsafe(50),
            tmp_path / "wrong-data",
            tmp_path / "wrong-recordings",
        )
        wrong, _ = run([RESTORE, dump], wrong_env)
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr
        assert "DJANGO_SECRET_KEY is not the key of the server the backup came from" in wrong.stdout

        # --- the console on the restored database serves the same ---
        worker, base = start_worker(new_env)
        after = {
            (who.name, route): answer(requests.get(base + route, headers=bearer(who.token), timeout=30))
            for who in (ada, bob)
            for route in routes
        }
        assert after == before
        replayed = requests.get(
            f"{base}/terminal/sessions/{session.pk}/recording.cast",
            cookies={"sessionid": staff_cookie},
            timeout=30,
            allow_redirects=False,
        )
        assert replayed.status_code == 200
        assert replayed.content == original_cast
        # The restored console writes the audit log on from where it was.
        refused = requests.post(
            f"{base}/v1/clusters/demo/jobs",
            json={"script_path": bob.script("again.sh", HELLO)},
            headers=bearer(bob.token),
            timeout=30,
        )
        assert refused.status_code == 403
        with psycopg.connect(restored_url) as c:
            count, last, action, outcome = c.execute(
                "SELECT (SELECT count(*) FROM audit_auditevent), id, action, outcome FROM audit_auditevent "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert (action, outcome) == ("job.submit", "denied")
        assert last > newest
        assert count > old_tables["audit_auditevent"][0]
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
        with psycopg.connect(server, autocommit=True) as admin_db:
            for name in (fresh, wrong_key_db):
                admin_db.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            admin_db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    rows = sum(n for n, _ in old_tables.values())
    print(
        f"backup restored: dump {dump.stat().st_size / 1024:.0f} KiB + recordings "
        f"{tarball.stat().st_size / 1024:.1f} KiB; {len(old_tables)} tables, {rows} rows identical after "
        f"restore (audit log {old_tables['audit_auditevent'][0]} events, still append-only); backup "
        f"{backup_seconds:.1f} s, restore {restore_seconds:.1f} s; {len(after)} /v1 answers and the "
        f"recording served the same"
    )


@pytest.mark.django_db
def test_a_backup_keeps_the_newest_pairs_it_is_told_to_and_a_failed_one_leaves_nothing(
    postgres_tools, settings, tmp_path
):
    db = connection.settings_dict
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (backups / f"clusterra-{stamp}.dump").write_bytes(b"old")
        (backups / f"recordings-{stamp}.tar.gz").write_bytes(b"old")
    (backups / "notes.txt").write_text("not a backup")
    env_file = write_env(
        tmp_path / "old.env",
        url_of(db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]),
        settings.SECRET_KEY,
        tmp_path / "data",
        tmp_path / "no-recordings-yet",
    )
    with env_file.open("a") as f:
        f.write("CLUSTERRA_BACKUP_KEEP=2\n")

    done, _ = run([BACKUP, backups], env_file)

    assert done.returncode == 0, done.stderr
    assert "the archive is empty" in done.stdout
    dumps = sorted(p.name.removeprefix("clusterra-").removesuffix(".dump") for p in backups.glob("*.dump"))
    tarballs = sorted(
        p.name.removeprefix("recordings-").removesuffix(".tar.gz") for p in backups.glob("*.gz")
    )
    assert len(dumps) == 2  # the newest two: the oldest kept is the third old one, then today's
    assert dumps[0] == "20200103T000000Z" < dumps[1]
    assert tarballs == dumps
    assert (backups / "notes.txt").exists()  # only the script's own names are pruned

    missing = write_env(
        tmp_path / "missing.env",
        url_of(db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], f"no_such_db_{secrets.token_hex(4)}"),
        settings.SECRET_KEY,
        tmp_path / "data",
        tmp_path / "no-recordings-yet",
    )
    failed, _ = run([BACKUP, tmp_path / "failed"], missing)
    assert failed.returncode == 1
    assert "pg_dump of the database no_such_db_" in failed.stderr
    assert list((tmp_path / "failed").iterdir()) == []  # neither a backup nor a partial one


def url_of(user: str, password: str, host: str, port: str, name: str) -> str:
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    return f"postgresql://{credentials}@{host or '127.0.0.1'}:{port or 5432}/{quote(name, safe='')}"


def submit(client, person, body):
    return client.post(
        "/v1/clusters/demo/jobs", json.dumps(body), content_type="application/json", **person.auth
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def answer(response) -> tuple[int, object]:
    """Status and JSON body, without the one field that is the time of the answer itself."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("update_time", None)
    return response.status_code, body


def session_recording(pk: int) -> str:
    return TerminalSession.objects.get(pk=pk).recording


def tables_of(url: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of all its rows."""
    with psycopg.connect(url, autocommit=True) as c:
        names = [n for (n,) in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {
            name: c.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(r::text, '|' ORDER BY r::text)), '') FROM {} r"
                ).format(sql.Identifier(name))
            ).fetchone()
            for name in sorted(names)
        }


def last_event_of(url: str) -> tuple:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(
            "SELECT count(*) OVER (), id, time, actor_name, action, outcome, message FROM audit_auditevent "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()


def sequences_of(url: str) -> dict[str, int | None]:
    with psycopg.connect(url, autocommit=True) as c:
        return dict(
            c.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")
        )


def files_of(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mode & 0o777, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


def write_env(path: Path, database_url: str, secret_key: str, data: Path, recordings: Path) -> Path:
    """An environment file as deploy/clusterra.env.example lays it out, with the settings a restore needs."""
    path.write_text(
        "# The console's settings (systemd EnvironmentFile= format)\n"
        f"DATABASE_URL={database_url}\n"
        f"DJANGO_SECRET_KEY='{secret_key}'\n"
        f"CLUSTERRA_DATA_DIR={data}\n"
        f"CLUSTERRA_RECORDINGS_DIR={recordings}\n"
    )
    path.chmod(0o640)
    return path


def settings_in(env_file: Path) -> dict[str, str]:
    values = {}
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value.strip("'")
    return values


def clean_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    return env | extra


def run(command: list, env_file: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        [str(part) for part in command],
        env=clean_environment(CLUSTERRA_ENV_FILE=str(env_file)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done, time.monotonic() - started


def start_worker(env_file: Path) -> tuple[subprocess.Popen, str]:
    """A web worker on the restored database, with the environment systemd would give it from the file."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = env_file.with_suffix(".worker.log")
    with log.open("w") as output:
        process = subprocess.Popen(
            live_server.command(port),
            cwd=REPO,
            env=clean_environment(**settings_in(env_file)),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{base}/healthz", timeout=5)
            return process, base
        except requests.ConnectionError:
            if process.poll() is not None:
                raise AssertionError(f"the restored worker exited: {log.read_text()}") from None
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the restored worker did not answer within 60 s") from None
            time.sleep(0.2)
