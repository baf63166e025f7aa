#!/usr/bin/env bash
# Stops the test PostgreSQL started by postgres/up.sh (fast shutdown, waits for it to exit).
# The cluster's files stay in $RIG_DIR/postgres; `down.sh --purge` removes them and the env file.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../common.sh
source "$HERE/../common.sh"

[[ $(id -u) -eq 0 ]] || rig_die "postgres/down.sh must run as root"

PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=$RIG_DIR/postgres
PG_DATA=$PG_DIR/data

[[ -d $PG_DIR ]] || exit 0
exec 9>"$PG_DIR.lock"
flock -w 60 9 || rig_die "another postgres/up.sh or down.sh holds $PG_DIR.lock"

if [[ -s $PG_DATA/PG_VERSION ]] && runuser -u postgres -- "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 30 >/dev/null 9>&-
    rig_log "postgres: stopped"
fi
if [[ ${1:-} == --purge ]]; then
    rm -rf "$PG_DIR" "$RIG_DIR/postgres.env"
    rig_log "postgres: removed $PG_DIR"
fi
