#!/usr/bin/env bash
# Backs up the console: the database (pg_dump, custom format) and the terminal recordings (a tarball).
#
#   deploy/backup.sh DEST_DIR
#
# writes DEST_DIR/clusterra-<UTC stamp>.dump and DEST_DIR/recordings-<UTC stamp>.tar.gz, from the settings
# in /etc/clusterra/clusterra.env (or CLUSTERRA_ENV_FILE). With CLUSTERRA_BACKUP_KEEP=N it then deletes all
# but the newest N pairs in DEST_DIR. Run by clusterra-backup.timer; restored by deploy/restore.sh.
# deploy/BACKUP.md says what else to keep (the environment file, the clusters' JWT keys) and how to restore.
set -euo pipefail
# A dump holds sessions, sealed IdP tokens and the audit log: for the user who runs the backup only.
umask 077

# shellcheck source=deploy/lib-backup.sh
. "$(dirname "$0")/lib-backup.sh"

[ $# -eq 1 ] || die "usage: $0 DEST_DIR"
dest=${1%/}
load_env
keep=${CLUSTERRA_BACKUP_KEEP:-}
[[ -z $keep || $keep =~ ^[1-9][0-9]*$ ]] || die "CLUSTERRA_BACKUP_KEEP=$keep is not a number of backups (1 or more)"
read_database_url
command -v pg_dump >/dev/null || die "pg_dump is missing: apt-get install postgresql-client"
mkdir -p -- "$dest"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
dump=$dest/clusterra-$stamp.dump
tarball=$dest/recordings-$stamp.tar.gz
if [ -e "$dump" ] || [ -e "$tarball" ]; then
    die "$dump already exists (two backups in one second?)"
fi
# Written under a dot-name and renamed when complete, so a file with the final name is a whole backup.
partial_dump=$dest/.clusterra-$stamp.dump.partial
partial_tarball=$dest/.recordings-$stamp.tar.gz.partial
trap 'rm -f -- "$partial_dump" "$partial_tarball"' EXIT

# pg_dump reads every table in one repeatable-read transaction: the dump is one consistent moment, taken
# while the console keeps serving. It waits at most a minute for a lock (a migration under way).
started=$(date +%s.%N)
pg_dump --format=custom --lock-wait-timeout=60000 --file="$partial_dump" --dbname="$PG_URL" ||
    die "pg_dump of the $DB_SHOWN failed (above)"
listing=$(pg_restore --list "$partial_dump") || die "the dump cannot be read back (above)"
tables=$(grep -c ' TABLE DATA ' <<<"$listing" || true)
mv -- "$partial_dump" "$dump"
log "$DB_SHOWN → $dump ($(size_of "$dump"), $tables tables, $(seconds_since "$started") s)"

# The recordings after the database: every recording a session row in the dump names was begun before the
# dump, so it is in the tarball. One still being written is archived as far as it got.
recordings=$(recordings_dir)
started=$(date +%s.%N)
if [ -d "$recordings" ]; then
    status=0
    tar --create --gzip --file="$partial_tarball" --directory="$recordings" --warning=no-file-changed . ||
        status=$?
    # GNU tar's 1: a file changed while it was read (a live terminal's recording); 2 and up: a failure.
    [ "$status" -le 1 ] || die "archiving $recordings failed (tar exit $status, above)"
    files=$(find "$recordings" -type f | wc -l)
else
    tar --create --gzip --file="$partial_tarball" --files-from=/dev/null
    files=0
    log "no recordings folder $recordings yet: the archive is empty"
fi
mv -- "$partial_tarball" "$tarball"
log "recordings $recordings ($files files) → $tarball ($(size_of "$tarball"), $(seconds_since "$started") s)"
if [ -n "${CLUSTERRA_RECORDINGS_S3:-}" ]; then
    log "recordings kept in $CLUSTERRA_RECORDINGS_S3 are not in this tarball (only uploads that failed are):" \
        "the bucket's own versioning is their backup"
fi

if [ -n "$keep" ]; then
    shopt -s nullglob
    dumps=("$dest"/clusterra-*.dump) # sorted by name, so oldest first (the names are UTC stamps)
    shopt -u nullglob
    for ((i = 0; i < ${#dumps[@]} - keep; i++)); do
        old=${dumps[i]#"$dest"/clusterra-}
        old=${old%.dump}
        rm -f -- "${dumps[i]}" "$dest/recordings-$old.tar.gz"
        log "pruned the backup of $old (CLUSTERRA_BACKUP_KEEP=$keep)"
    done
fi

log "not in these files, keep them apart: ${ENV_FILE:-the environment file} (DJANGO_SECRET_KEY) and" \
    "each cluster's Slurm JWT key (deploy/BACKUP.md)"
