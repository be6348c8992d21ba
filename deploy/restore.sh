#!/usr/bin/env bash
# Restores a backup made by deploy/backup.sh: the dump into an EMPTY database, the recordings into an
# empty recordings folder, both named by /etc/clusterra/clusterra.env (or CLUSTERRA_ENV_FILE).
#
#   deploy/restore.sh DUMP [RECORDINGS_TARBALL]
#
# Exit status: 0 restored, and this checkout's code matches the data; 1 refused or failed; 2 restored,
# but the code and the data disagree (migrations, or the secret key): the message says what to do.
# Step by step, on a fresh server: deploy/BACKUP.md.
set -euo pipefail
umask 077

# shellcheck source=deploy/lib-backup.sh
. "$(dirname "$0")/lib-backup.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    die "usage: $0 DUMP [RECORDINGS_TARBALL]"
fi
dump=$1
tarball=${2:-}
for tool in pg_restore psql; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install postgresql-client"
done
# Both files are read through before anything is written.
[ -r "$dump" ] || die "cannot read $dump"
pg_restore --list "$dump" >/dev/null || die "$dump is not a dump backup.sh wrote (pg_dump custom format)"
if [ -n "$tarball" ]; then
    [ -r "$tarball" ] || die "cannot read $tarball"
    tar --list --gzip --file="$tarball" >/dev/null || die "$tarball is not a whole recordings archive"
fi

load_env
read_database_url
# The console seals what it keeps of each IdP sign-in with a key derived from its secret key, and signs
# sessions with it: restored data under another key is partly unreadable, and a console started without
# one would make a new key. The old server's key has to be in place first.
if [ -z "${DJANGO_SECRET_KEY:-}" ] && [ ! -s "$(data_dir)/secret_key" ]; then
    die "no secret key: put the old server's DJANGO_SECRET_KEY into ${ENV_FILE:-the environment file} first" \
        "(deploy/BACKUP.md): without it the restored sessions and sealed IdP tokens cannot be read"
fi

psql_query() {
    psql --no-psqlrc --quiet --tuples-only --no-align --set=ON_ERROR_STOP=1 --dbname="$PG_URL" "$@"
}

# Only into an empty database, with no --force: a DATABASE_URL naming the live console's database by
# mistake must not be overwritten, and a database someone already migrated would not take the dump
# cleanly. Replacing a database is two explicit commands (below), with the console stopped.
relations=$(
    psql_query -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'"
) || die "cannot reach the $DB_SHOWN (above). Make it first: runuser -u postgres -- createdb --owner=$DB_USER $DB_NAME"
if [ "$relations" != 0 ]; then
    die "the $DB_SHOWN is not empty ($relations tables, indexes and sequences): restore.sh fills only an" \
        "empty database. To replace it, stop the console, then:" \
        "runuser -u postgres -- dropdb $DB_NAME && runuser -u postgres -- createdb --owner=$DB_USER $DB_NAME"
fi
recordings=$(recordings_dir)
if [ -n "$tarball" ] && [ -d "$recordings" ] && [ -n "$(ls -A -- "$recordings")" ]; then
    die "the recordings folder $recordings is not empty: restore.sh fills only an empty one"
fi

# One transaction: a dump that fails half-way leaves the database empty, ready for another try.
# --no-owner: every object belongs to the role of DATABASE_URL, whatever role owned it on the old server;
# --no-privileges: the old server's GRANTs name roles this one may not have.
started=$(date +%s.%N)
pg_restore --no-owner --no-privileges --single-transaction --exit-on-error --dbname="$PG_URL" "$dump" ||
    die "pg_restore into the $DB_SHOWN failed (above); its transaction was rolled back: the database is empty"
summary=$(
    psql_query --field-separator=' ' -c "SELECT
        (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'),
        (SELECT count(*) FROM audit_auditevent),
        (SELECT coalesce(to_char(max(time) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS UTC'), 'none')
           FROM audit_auditevent)"
)
read -r tables events last_event <<<"$summary"
log "$dump → $DB_SHOWN: $tables tables, audit log of $events events, the last at $last_event" \
    "($(seconds_since "$started") s)"

if [ -n "$tarball" ]; then
    started=$(date +%s.%N)
    # The files go to whoever owns the folder (or, for a new folder, the data folder): the service user.
    parent=$(dirname -- "$recordings")
    if [ -d "$recordings" ]; then
        owner=$(stat -c %u:%g -- "$recordings")
    elif [ -d "$parent" ]; then
        owner=$(stat -c %u:%g -- "$parent")
    else
        owner=$(id -u):$(id -g)
    fi
    mkdir -p -- "$recordings"
    tar --extract --gzip --file="$tarball" --directory="$recordings" --no-same-owner ||
        die "the database is restored but the recordings are not all in $recordings (above): free what" \
            "stopped tar, empty that folder and run: tar -xzf $tarball -C $recordings"
    if [ "$(id -u)" = 0 ]; then
        chown -R -- "$owner" "$recordings"
    fi
    files=$(find "$recordings" -type f | wc -l)
    log "$tarball → $recordings: $files files, owned by $(stat -c %U:%G -- "$recordings")" \
        "($(seconds_since "$started") s)"
fi

# Session rows name their recording by its full path: a new server with another recordings folder would
# restore the files where the console does not look for them.
elsewhere=$(
    psql_query --field-separator=' ' -v dir="$recordings/" <<'SQL'
SELECT count(*), coalesce(min(recording), '') FROM terminal_terminalsession
 WHERE recording <> '' AND recording NOT LIKE 's3://%' AND left(recording, length(:'dir')) <> :'dir';
SQL
)
if [ "${elsewhere%% *}" != 0 ]; then
    warn "${elsewhere%% *} terminal sessions name recordings outside $recordings (such as ${elsewhere#* }):" \
        "set CLUSTERRA_RECORDINGS_DIR to the old server's folder, or the console cannot replay them"
fi

# Does this checkout's code fit the data? Migrations both ways, and the secret key on a sample of the
# sessions and sealed IdP tokens.
python=$REPO/.venv/bin/python
[ -x "$python" ] || python=python3
status=0
(cd "$REPO" && DJANGO_SETTINGS_MODULE=clusterra_site.settings "$python" - <<'EOF') || status=$?
import sys

import django

django.setup()

from cryptography.fernet import InvalidToken
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.idp_check import _cipher
from accounts.models import IdpRefresh

executor = MigrationExecutor(connection)
pending = [m for m, _ in executor.migration_plan(executor.loader.graph.leaf_nodes())]
unknown = sorted(set(executor.loader.applied_migrations) - set(executor.loader.disk_migrations))
mismatch = False
if unknown:
    mismatch = True
    names = ", ".join(f"{app}.{name}" for app, name in unknown[:5])
    print(f"restore.sh: the data was migrated by newer code than this checkout ({len(unknown)} migrations it "
          f"lacks: {names}): install the release the backup was made with, or a newer one")
if pending:
    mismatch = True
    print(f"restore.sh: the backup predates this code by {len(pending)} migrations: run "
          "`manage.py migrate` before starting the console")
if not mismatch:
    print(f"restore.sh: this code's migrations match the data ({len(executor.loader.applied_migrations)} applied)")

store = SessionStore()
sessions = list(Session.objects.values_list("session_data", flat=True)[:50])
readable = 0
for data in sessions:
    try:
        signing.loads(data, salt=store.key_salt, serializer=store.serializer)
        readable += 1
    except signing.BadSignature:
        pass
tokens = list(IdpRefresh.objects.values_list("sealed", flat=True)[:50])
unsealed = 0
for sealed in tokens:
    try:
        _cipher().decrypt(sealed.encode())
        unsealed += 1
    except InvalidToken:
        pass
if (sessions and not readable) or (tokens and not unsealed):
    mismatch = True
    print(f"restore.sh: DJANGO_SECRET_KEY is not the key of the server the backup came from: {len(sessions)} "
          f"sessions and {len(tokens)} sealed IdP tokens checked, none readable. Put the old key in the "
          "environment file before starting the console, or everyone is signed out and the IdP check "
          "drops each person's token (deploy/BACKUP.md)")
elif sessions or tokens:
    print(f"restore.sh: the secret key reads the restored sessions ({readable} of {len(sessions)} checked) "
          f"and sealed IdP tokens ({unsealed} of {len(tokens)})")
sys.exit(2 if mismatch else 0)
EOF
case $status in
0) log "restored; start the console (deploy/README.md)" ;;
2)
    warn "restored, but the code and the data disagree (above): fix that before starting the console"
    exit 2
    ;;
*)
    warn "restored, but this checkout's code could not be checked against it (above)"
    exit 2
    ;;
esac
