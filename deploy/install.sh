#!/usr/bin/env bash
# deploy/install.sh: this checkout (where `make setup` ran) as the console's services on a Debian 12/13
# server, behind Debian's nginx. Idempotent: run it again after an upgrade or to change an option; the
# options given once are remembered (/etc/clusterra/install.conf). deploy/README.md walks through it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/install.sh [options]          (as root)
       deploy/install.sh --uninstall [--purge]

  --server-name NAME   the console's host name (default: this host's full name)
  --https-port PORT    default 443
  --http-port PORT     default 80 (it only sends people to HTTPS)
  --cert FILE          TLS certificate chain, PEM (default: a self-signed one, made once)
  --key FILE           its private key, PEM
  --workers N          web workers (default: the number of CPUs)
  --set NAME=VALUE     write a setting into /etc/clusterra/clusterra.env (repeatable)
  --head-node          the console runs on its cluster's head node, as root (systemd/head-node.conf)
  --no-head-node       undo --head-node
  --uninstall          remove the units, the nginx site and the runtime folders; keep the settings,
                       the data, the backups and the user
  --purge              with --uninstall: remove those too (never the PostgreSQL database)
EOF
}

CHECKOUT=$(cd "$(dirname "$0")/.." && pwd -P)
SERVICE_USER=clusterra
ETC=/etc/clusterra
ENV_FILE=$ETC/clusterra.env
INSTALL_CONF=$ETC/install.conf
UNIT_DIR=/etc/systemd/system
DROPINS=$UNIT_DIR/clusterra-.service.d
TMPFILES=/etc/tmpfiles.d/clusterra.conf
SITE=/etc/nginx/sites-available/clusterra.conf
SITE_LINK=/etc/nginx/sites-enabled/clusterra.conf
MANAGE=/usr/local/sbin/clusterra-manage
BACKUPS=/var/backups/clusterra
ACME=/var/www/clusterra-acme
SELF_SIGNED=$ETC/tls
RUN_DIRS=(/run/clusterra /run/clusterra-shells)

say() { echo "install: $*"; }
die() {
  echo "install: $*" >&2
  exit 1
}
systemd_running() { [ -d /run/systemd/system ]; }

# The value of NAME in an environment file (as systemd reads it), or DEFAULT.
env_value() {
  local file=$1 name=$2 default=${3:-} line value found=
  [ -r "$file" ] || {
    echo "$default"
    return
  }
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in "$name="*) found=1 value=${line#*=} ;; esac
  done <"$file"
  if [ -z "$found" ]; then
    echo "$default"
    return
  fi
  value=${value%"${value##*[![:space:]]}"}
  case $value in \"*\" | \'*\') value=${value:1:${#value}-2} ;; esac
  echo "$value"
}

# NAME=VALUE into an environment file: the line replaced where it is set, else added at the end.
set_env() {
  local file=$1 name=$2 value=$3
  case $value in *[[:space:]]*) value="\"$value\"" ;; esac
  NAME=$name VALUE=$value awk '
    BEGIN { done = 0 }
    index($0, ENVIRON["NAME"] "=") == 1 { print ENVIRON["NAME"] "=" ENVIRON["VALUE"]; done = 1; next }
    { print }
    END { if (!done) print ENVIRON["NAME"] "=" ENVIRON["VALUE"] }
  ' "$file" >"$file.new"
  chown root:"$SERVICE_USER" "$file.new"
  chmod 0640 "$file.new"
  mv "$file.new" "$file"
}

# ---- options ----------------------------------------------------------------------------------------------
uninstall=0
purge=0
sets=()
declare -A opt=()
while [ $# -gt 0 ]; do
  case $1 in
  --server-name | --https-port | --http-port | --cert | --key | --workers)
    [ $# -ge 2 ] || die "$1 needs a value"
    opt[${1#--}]=$2
    shift 2
    ;;
  --set)
    [ $# -ge 2 ] && [[ $2 == [A-Za-z_]*=* ]] || die "--set needs NAME=VALUE"
    sets+=("$2")
    shift 2
    ;;
  --head-node) opt[head-node]=1 && shift ;;
  --no-head-node) opt[head-node]=0 && shift ;;
  --uninstall) uninstall=1 && shift ;;
  --purge) purge=1 && shift ;;
  -h | --help) usage && exit 0 ;;
  *) usage >&2 && exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run it as root: it creates a user and installs system files"
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"

# ---- uninstall ----------------------------------------------------------------------------------------------
if [ "$uninstall" = 1 ]; then
  units=()
  for f in "$UNIT_DIR"/clusterra-*.service "$UNIT_DIR"/clusterra-*.timer "$UNIT_DIR"/clusterra.target; do
    [ -e "$f" ] && units+=("$(basename "$f")")
  done
  if systemd_running; then
    # Every unit is PartOf= the target: stopping it stops them all. The instances (web@1..N, sync@1 and
    # @2) are disabled by the names of their links in the target's folder.
    systemctl stop clusterra.target 'clusterra-*' 2>/dev/null || true
    wanted=()
    for link in "$UNIT_DIR"/clusterra.target.wants/*; do [ -e "$link" ] && wanted+=("$(basename "$link")"); done
    systemctl disable --quiet clusterra.target "${wanted[@]}" 2>/dev/null || true
  elif pgrep -u "$SERVICE_USER" >/dev/null 2>&1; then
    echo "install: processes of $SERVICE_USER still run (systemd is not running here): stop them first" >&2
    [ "$purge" = 0 ] || exit 1
  fi
  rm -f "${units[@]/#/$UNIT_DIR/}"
  rm -rf "$DROPINS" "$UNIT_DIR/clusterra.target.wants"
  rm -f "$TMPFILES" "$MANAGE" "$SITE_LINK" "$SITE" "$INSTALL_CONF"
  rm -rf "${RUN_DIRS[@]}" "$ACME" "$SELF_SIGNED"
  static=$(env_value "$ENV_FILE" CLUSTERRA_STATIC_DIR /var/lib/clusterra-static)
  # Made by collectstatic from the checkout: nothing in it is lost. Only a folder collectstatic filled
  # (its manifest is there), whatever the settings file names.
  if [ -e "$static/staticfiles.json" ]; then rm -rf "$static"; else rmdir "$static" 2>/dev/null || true; fi
  if systemd_running; then
    systemctl daemon-reload
    systemctl reload nginx 2>/dev/null || true
  fi
  say "removed the units, the nginx site, clusterra-manage and the static files"
  data=$(env_value "$ENV_FILE" CLUSTERRA_DATA_DIR /var/lib/clusterra)
  recordings=$(env_value "$ENV_FILE" CLUSTERRA_RECORDINGS_DIR "")
  if [ "$purge" = 1 ]; then
    rm -rf "$ETC" "$data" "$BACKUPS"
    [ -z "$recordings" ] || rm -rf "$recordings"
    if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
    if getent group "$SERVICE_USER" >/dev/null; then groupdel "$SERVICE_USER"; fi
    say "purged $ETC, $data, $BACKUPS and the user $SERVICE_USER; the PostgreSQL database is left as it is"
  else
    say "kept $ETC (settings, secret key), $data (data, recordings), $BACKUPS and the user $SERVICE_USER:" \
      "--uninstall --purge removes them"
  fi
  exit 0
fi

# ---- checks -------------------------------------------------------------------------------------------------
# The path goes into unit files and nginx's config unquoted.
[[ $CHECKOUT =~ ^/[A-Za-z0-9/._+-]+$ ]] || die "the checkout's path $CHECKOUT has characters a unit file cannot hold"
case $CHECKOUT/ in
/home/* | /root/*) die "the checkout is under $CHECKOUT: the units cannot see /home or /root (ProtectHome=); put it in /opt or /srv" ;;
esac
[ -x "$CHECKOUT/.venv/bin/uvicorn" ] || die "$CHECKOUT/.venv is missing: run \`make setup\` in $CHECKOUT first"
command -v nginx >/dev/null || die "nginx is not installed: apt-get install nginx"
command -v setpriv >/dev/null || die "setpriv is missing (util-linux)"
getent group www-data >/dev/null || die "the group www-data (nginx's) is missing"

# What was chosen last time, unless given now.
declare -A was=()
if [ -r "$INSTALL_CONF" ]; then
  while IFS='=' read -r k v; do [ -n "$k" ] && was[$k]=$v; done <"$INSTALL_CONF"
fi
pick() { # option name, default
  if [ -n "${opt[$1]:-}" ]; then echo "${opt[$1]}"; elif [ -n "${was[$1]:-}" ]; then echo "${was[$1]}"; else echo "$2"; fi
}
server_name=$(pick server-name "$(hostname -f 2>/dev/null || hostname)")
https_port=$(pick https-port 443)
http_port=$(pick http-port 80)
workers=$(pick workers "$(nproc)")
head_node=$(pick head-node 0)
cert=$(pick cert "")
key=$(pick key "")
[[ $server_name =~ ^[A-Za-z0-9.-]+$ ]] || die "--server-name '$server_name' is not a host name"
for p in "$https_port" "$http_port"; do [[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || die "not a port: $p"; done
[[ $workers =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] || die "--workers must be 1 or more"
if [ -n "$cert$key" ]; then
  [ -n "$cert" ] && [ -n "$key" ] || die "--cert and --key go together"
  [ -r "$cert" ] && [ -r "$key" ] || die "cannot read $cert or $key"
fi

# ---- the service user and the settings ------------------------------------------------------------------------
if ! getent passwd "$SERVICE_USER" >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/clusterra --no-create-home --shell /usr/sbin/nologin \
    --comment "Clusterra console" "$SERVICE_USER"
  say "created the system user $SERVICE_USER"
fi
# The units run the checkout's own Python as that user: it must be able to read it all.
setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups test -r "$CHECKOUT/manage.py" -a \
  -x "$CHECKOUT/.venv/bin/python" ||
  die "$SERVICE_USER cannot read $CHECKOUT or run its Python ($(readlink -f "$CHECKOUT/.venv/bin/python")):" \
    "make them readable (chmod o+rX), or \`make setup PY=/usr/bin/python3\` for Debian's own"
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
if [ ! -e "$ENV_FILE" ]; then
  install -m 0640 -o root -g "$SERVICE_USER" "$CHECKOUT/deploy/clusterra.env.example" "$ENV_FILE"
  set_env "$ENV_FILE" CLUSTERRA_ALLOWED_HOSTS "$server_name"
  say "wrote $ENV_FILE from deploy/clusterra.env.example: read it through (the IdP, mail)"
fi
chown root:"$SERVICE_USER" "$ENV_FILE"
chmod 0640 "$ENV_FILE"
for s in "${sets[@]}"; do set_env "$ENV_FILE" "${s%%=*}" "${s#*=}"; done
if [ -z "$(env_value "$ENV_FILE" DJANGO_SECRET_KEY "")" ]; then
  set_env "$ENV_FILE" DJANGO_SECRET_KEY "$(head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_')"
  say "generated DJANGO_SECRET_KEY"
fi
allowed=" $(env_value "$ENV_FILE" CLUSTERRA_ALLOWED_HOSTS "" | tr ',' ' ') "
[[ $allowed == *" $server_name "* ]] ||
  say "warning: $server_name is not in CLUSTERRA_ALLOWED_HOSTS ($ENV_FILE): the console will answer 400"
data=$(env_value "$ENV_FILE" CLUSTERRA_DATA_DIR /var/lib/clusterra)
static=$(env_value "$ENV_FILE" CLUSTERRA_STATIC_DIR "")
if [ -z "$static" ]; then
  static=/var/lib/clusterra-static
  set_env "$ENV_FILE" CLUSTERRA_STATIC_DIR "$static"
fi
recordings=$(env_value "$ENV_FILE" CLUSTERRA_RECORDINGS_DIR "")
max_upload=$(env_value "$ENV_FILE" CLUSTERRA_MAX_UPLOAD_BYTES 10485760)
terminal_minutes=$(env_value "$ENV_FILE" CLUSTERRA_TERMINAL_MAX_MINUTES 720)
[[ $max_upload =~ ^[0-9]+$ ]] || die "CLUSTERRA_MAX_UPLOAD_BYTES=$max_upload is not a number"
[[ $terminal_minutes =~ ^[0-9]+$ ]] || die "CLUSTERRA_TERMINAL_MAX_MINUTES=$terminal_minutes is not a number"
for d in "$data" "$static" ${recordings:+"$recordings"}; do
  [[ $d =~ ^/[A-Za-z0-9/._+-]+$ ]] || die "'$d' is not an absolute path a unit file can hold"
done

# ---- folders -----------------------------------------------------------------------------------------------------
# The data folder is private (the console refuses an open one); static files are public, for nginx.
install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$data" "$BACKUPS"
install -d -m 0755 -o "$SERVICE_USER" -g "$SERVICE_USER" "$static"
install -d -m 0755 "$ACME"
writable=$data
if [ -n "$recordings" ] && [[ $recordings != "$data"/* ]]; then
  install -d -m 0700 -o "$SERVICE_USER" -g "$SERVICE_USER" "$recordings"
  writable="$data $recordings"
fi

# ---- systemd units -----------------------------------------------------------------------------------------------
keeper_user=$SERVICE_USER
[ "$head_node" = 0 ] || keeper_user=root
render() { # template, destination, mode
  sed -e "s|@CHECKOUT@|$CHECKOUT|g" -e "s|@WRITABLE@|$writable|g" -e "s|@KEEPER_USER@|$keeper_user|g" \
    -e "s|@HTTPS_PORT@|$https_port|g" "$1" >"$2.new"
  chmod "${3:-0644}" "$2.new"
  mv "$2.new" "$2"
}
for f in "$CHECKOUT"/deploy/systemd/clusterra*; do
  # The confinement is the head node's alone (and needs root).
  case $(basename "$f"):$head_node in clusterra-confine.service:0) continue ;; esac
  render "$f" "$UNIT_DIR/$(basename "$f")"
done
install -d -m 0755 "$DROPINS"
render "$CHECKOUT/deploy/systemd/common.conf" "$DROPINS/common.conf"
if [ "$head_node" = 1 ]; then
  render "$CHECKOUT/deploy/systemd/head-node.conf" "$DROPINS/head-node.conf"
  say "head-node mode: the units run as root (systemd/head-node.conf says why)"
else
  if [ -e "$UNIT_DIR/clusterra-confine.service" ] && systemd_running; then
    systemctl disable --quiet clusterra-confine.service || true
  fi
  rm -f "$DROPINS/head-node.conf" "$UNIT_DIR/clusterra-confine.service"
fi
render "$CHECKOUT/deploy/systemd/tmpfiles.conf" "$TMPFILES"
systemd-tmpfiles --create "$TMPFILES"
render "$CHECKOUT/deploy/clusterra-manage" "$MANAGE" 0755

# ---- nginx --------------------------------------------------------------------------------------------------------
if [ -z "$cert" ]; then
  cert=$SELF_SIGNED/$server_name.crt
  key=$SELF_SIGNED/$server_name.key
  if [ ! -s "$cert" ] || [ ! -s "$key" ]; then
    install -d -m 0700 "$SELF_SIGNED"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 90 -subj "/CN=$server_name" \
      -addext "subjectAltName=DNS:$server_name" -keyout "$key" -out "$cert" 2>/dev/null
    say "made a self-signed certificate for $server_name ($cert): replace it (deploy/README.md, certificates)"
  fi
  # Remembered as "none given", so that a later run with --cert replaces it.
  remembered_cert=
  remembered_key=
else
  remembered_cert=$cert
  remembered_key=$key
fi
nginx_version=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
# nginx 1.25.1 moved HTTP/2 from the listen line to a directive of its own (Debian 13 has 1.26, 12 has 1.22).
if [ "$(printf '%s\n' 1.25.1 "$nginx_version" | sort -V | head -1)" = 1.25.1 ]; then
  listen_http2=
  http2_on="    http2 on;"
else
  listen_http2=" http2"
  http2_on="    # HTTP/2: on the listen line (nginx $nginx_version)"
fi
ipv6_http="    # no IPv6 on this host"
ipv6_https=$ipv6_http
if grep -qs . /proc/net/if_inet6; then
  ipv6_http="    listen [::]:$http_port;"
  ipv6_https="    listen [::]:$https_port ssl$listen_http2;"
fi
upstreams=
for i in $(seq "$workers"); do
  upstreams+="    server unix:/run/clusterra/web-$i.sock max_fails=0;"$'\n'
done
suffix=
[ "$https_port" = 443 ] || suffix=":$https_port"
# The upload plus 1 MiB for the multipart envelope and the form, in whole MiB.
max_body="$(((max_upload + 2 * 1048576 - 1) / 1048576))m"
awk -v upstreams="${upstreams%$'\n'}" -v ipv6_http="$ipv6_http" -v ipv6_https="$ipv6_https" \
  -v http2_on="$http2_on" '
  $0 == "@UPSTREAM_SERVERS@" { print upstreams; next }
  $0 == "@IPV6_HTTP@" { print ipv6_http; next }
  $0 == "@IPV6_HTTPS@" { print ipv6_https; next }
  $0 == "@HTTP2_ON@" { print http2_on; next }
  { print }
' "$CHECKOUT/deploy/nginx/clusterra.conf" | sed \
  -e "s|@SERVER_NAME@|$server_name|g" -e "s|@HTTPS_PORT_SUFFIX@|$suffix|g" \
  -e "s|@HTTPS_PORT@|$https_port|g" -e "s|@HTTP_PORT@|$http_port|g" -e "s|@LISTEN_HTTP2@|$listen_http2|g" \
  -e "s|@CERT@|$cert|g" -e "s|@KEY@|$key|g" -e "s|@STATIC_DIR@|$static|g" -e "s|@MAX_BODY@|$max_body|g" \
  -e "s|@MAX_UPLOAD_BYTES@|$max_upload|g" -e "s|@WS_TIMEOUT@|$((terminal_minutes * 60))s|g" \
  -e "s|@WORKERS@|$workers|g" -e "s|@NGINX_VERSION@|$nginx_version|g" >"$SITE.new"
if grep -q '@[A-Z_0-9]*@' "$SITE.new"; then die "a placeholder was left in $SITE.new"; fi
mv "$SITE.new" "$SITE"
ln -sfn "$SITE" "$SITE_LINK"
nginx -t -q || die "nginx rejects the configuration (above); $SITE is the console's part"

cat >"$INSTALL_CONF" <<EOF
server-name=$server_name
https-port=$https_port
http-port=$http_port
workers=$workers
head-node=$head_node
cert=$remembered_cert
key=$remembered_key
EOF

# ---- the database and the static files --------------------------------------------------------------------------------
# Migrations first, while the old workers still run: they are written to be compatible with the code
# before them (deploy/README.md, "Upgrades").
"$MANAGE" migrate --no-input
"$MANAGE" collectstatic --no-input --verbosity 0
say "migrated the database and collected the static files into $static"

# ---- start -----------------------------------------------------------------------------------------------------------
enable=(clusterra.target clusterra-shells.service clusterra-sync@1.service clusterra-sync@2.service
  clusterra-expire-demo.timer clusterra-reconcile.timer clusterra-audit-export.timer clusterra-backup.timer)
for i in $(seq "$workers"); do enable+=("clusterra-web@$i.service"); done
[ "$head_node" = 0 ] || enable+=(clusterra-confine.service)
if systemd_running; then
  systemctl daemon-reload
  # Fewer workers than last time: the ones past N stop.
  for link in "$UNIT_DIR"/clusterra.target.wants/clusterra-web@*.service; do
    [ -e "$link" ] || continue
    i=${link##*@}
    i=${i%.service}
    [ "$i" -le "$workers" ] || systemctl disable --now "clusterra-web@$i.service"
  done
  systemctl enable --quiet "${enable[@]}"
  # Starts what is not running; a running worker or keeper is left alone (restarts: deploy/README.md).
  systemctl start clusterra.target
  systemctl reload-or-restart nginx
  say "enabled and started: ${enable[*]}; nginx reloaded"
else
  say "systemd is not running here (PID 1 is $(ps -o comm= -p 1)): the units are installed, nothing was" \
    "started. On a server booted with systemd: systemctl daemon-reload && systemctl enable --now" \
    "${enable[*]} && systemctl reload nginx"
fi
say "the console: https://$server_name$suffix/ ($workers web worker(s), settings in $ENV_FILE)"
