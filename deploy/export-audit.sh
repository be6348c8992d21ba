#!/usr/bin/env bash
# One UTC day of the audit log as JSON lines (manage.py export_audit), to CLUSTERRA_AUDIT_EXPORT: a folder
# (audit-DAY.jsonl in it) or s3://bucket/prefix (one object named by its interval). The day is yesterday,
# or the one given: `deploy/export-audit.sh 2026-03-01` exports a day a failed run missed.
# clusterra-audit-export.service runs it every night with the console's environment and user.
set -euo pipefail
cd "$(dirname "$0")/.."

day=${1:-$(date -u -d yesterday +%F)}
if ! since=$(date -u -d "$day" +%F) || [ "$since" != "$day" ]; then
  echo "export-audit: '$day' is not a day such as 2026-03-01" >&2
  exit 2
fi
until=$(date -u -d "$day + 1 day" +%F)
where=${CLUSTERRA_AUDIT_EXPORT:-${CLUSTERRA_DATA_DIR:-data}/audit}
# Explicit offsets: the interval is the UTC day whatever CLUSTERRA_TIME_ZONE says.
args=(--since "${since}T00:00:00+00:00" --until "${until}T00:00:00+00:00")
case $where in
s3://*) args+=(--s3 "$where") ;;
*)
  mkdir -p -m 0700 "$where"
  args+=(--output "$where/audit-$since.jsonl")
  ;;
esac
exec .venv/bin/python manage.py export_audit "${args[@]}"
