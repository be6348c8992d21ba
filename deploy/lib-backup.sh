# What backup.sh and restore.sh share: the environment file, the database URL, the data folders.
# Sourced, never run. See deploy/BACKUP.md.
# shellcheck shell=bash disable=SC2034

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO

log() { printf '%s: %s\n' "${0##*/}" "$*"; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

trim() {
    local s=$1
    s=${s#"${s%%[![:space:]]*}"}
    s=${s%"${s##*[![:space:]]}"}
    printf '%s' "$s"
}

# The console's environment file, as systemd's EnvironmentFile= reads it: NAME=value lines, # comments,
# a value may be wrapped in one pair of quotes, nothing is expanded. It wins over the caller's
# environment, so the database a restore writes into is the one written down in a file: to restore
# elsewhere, point CLUSTERRA_ENV_FILE at another file. A bad line is reported by number, never shown:
# it may hold a password.
load_env() {
    ENV_FILE=${CLUSTERRA_ENV_FILE:-/etc/clusterra/clusterra.env}
    if [ ! -e "$ENV_FILE" ]; then
        [ -z "${CLUSTERRA_ENV_FILE:-}" ] || die "CLUSTERRA_ENV_FILE=$ENV_FILE does not exist"
        log "no $ENV_FILE: the settings come from the environment"
        ENV_FILE=""
        return
    fi
    [ -r "$ENV_FILE" ] || die "$ENV_FILE cannot be read by $(id -un): run as root or as the service user"
    local line name value n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        line=$(trim "${line%$'\r'}")
        case $line in '' | '#'* | ';'*) continue ;; esac
        line=${line#export }
        [[ $line == *=* ]] || die "$ENV_FILE line $n is not NAME=value"
        name=$(trim "${line%%=*}")
        value=$(trim "${line#*=}")
        [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$ENV_FILE line $n: not a variable name"
        if [[ ${#value} -ge 2 && ${value:0:1} == "${value: -1}" && ${value:0:1} == [\"\'] ]]; then
            value=${value:1:${#value}-2}
        fi
        export "$name=$value"
    done <"$ENV_FILE"
    log "settings from $ENV_FILE"
}

# DATABASE_URL split the way libpq wants it: PG_URL (postgresql://, no password) for --dbname, the
# password in PGPASSWORD (never on a command line, where `ps` shows it to every local user); DB_NAME,
# DB_USER and DB_SHOWN to print. The database name defaults to "clusterra", as clusterra_site/env.py's.
read_database_url() {
    [ -n "${DATABASE_URL:-}" ] ||
        die "DATABASE_URL is not set${ENV_FILE:+ in $ENV_FILE}: backups cover a PostgreSQL console" \
            "(the embedded SQLite is one file: stop the console and copy it)"
    local parts=()
    mapfile -d '' parts < <(python3 -c "$SPLIT_URL")
    [ "${#parts[@]}" -eq 5 ] || die "cannot read DATABASE_URL (above)"
    PG_URL=${parts[0]}
    DB_NAME=${parts[2]}
    DB_USER=${parts[3]:-$(id -un)}
    DB_SHOWN=${parts[4]}
    if [ -n "${parts[1]}" ]; then
        export PGPASSWORD=${parts[1]}
    fi
}

SPLIT_URL='
import os
import sys
from urllib.parse import unquote, urlsplit

url = urlsplit(os.environ["DATABASE_URL"])
if url.scheme not in ("postgres", "postgresql", "pgsql"):
    sys.exit("DATABASE_URL is not a postgres:// URL: backups cover PostgreSQL")
userinfo, at, hostport = url.netloc.rpartition("@")
user = userinfo.split(":", 1)[0]
netloc = f"{user}@{hostport}" if at else hostport
path = url.path if url.path.strip("/") else "/clusterra"
name, role = unquote(path.lstrip("/")), unquote(user)
where = f"{url.hostname}:{url.port or 5432}" if url.hostname else "the local socket"
shown = f"database {name} on {where}" + (f" as {role}" if role else "")
clean = f"postgresql://{netloc}{path}" + (f"?{url.query}" if url.query else "")
sys.stdout.write("\0".join([clean, unquote(url.password or ""), name, role, shown]) + "\0")
'

# The data folder, as clusterra_site/settings.py finds it: CLUSTERRA_DATA_DIR, else data/ in the checkout.
# A relative path is taken from the checkout, the working directory the service units run in.
data_dir() {
    local dir=${CLUSTERRA_DATA_DIR:-$REPO/data}
    case $dir in /*) ;; *) dir=$REPO/$dir ;; esac
    printf '%s' "${dir%/}"
}

# The recordings folder, as settings.py finds it: CLUSTERRA_RECORDINGS_DIR, else recordings/ in the data folder.
recordings_dir() {
    local dir=${CLUSTERRA_RECORDINGS_DIR:-$(data_dir)/recordings}
    case $dir in /*) ;; *) dir=$REPO/$dir ;; esac
    printf '%s' "${dir%/}"
}

size_of() {
    numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")"
}

seconds_since() {
    # $1 is a start taken with `date +%s.%N`.
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}
