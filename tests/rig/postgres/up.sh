#!/usr/bin/env bash
# Starts a throwaway PostgreSQL 15 (Debian's postgresql-15) for the PostgreSQL store's tests:
# a cluster of its own (initdb in $RIG_DIR/postgres/data, owned by the `postgres` user), listening
# on 127.0.0.1 only (port $RIG_PG_PORT) and on a socket in $RIG_DIR/postgres/run, with a test
# database and role whose password is random and kept in a 0600 file. Writes
# $RIG_DIR/postgres.env: MAILPLUG_PG_URL (without the password) and MAILPLUG_PG_PASSWORD_FILE.
# Idempotent: a healthy cluster started by this script is left running (about 0.1 s); a stopped
# one is started again with its data; safe to run twice and in parallel (a lock). down.sh stops it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../common.sh
source "$HERE/../common.sh"

[[ $(id -u) -eq 0 ]] || rig_die "postgres/up.sh must run as root (it runs the server as the postgres user)"

RIG_PG_PORT=${RIG_PG_PORT:-10432}
PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR=$RIG_DIR/postgres
PG_DATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log
PG_PASSWORD_FILE=$PG_DIR/password
PG_ENV=$RIG_DIR/postgres.env
PG_DB=mailplug_test
PG_ROLE=mailplug

if [[ ! -x $PG_BIN/postgres ]]; then
    rig_log "installing postgresql-15"
    # Debian's package starts a cluster of its own: not here (policy-rc.d 101 refuses service starts).
    policy=/usr/sbin/policy-rc.d
    added=
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 0755 "$policy"; added=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 postgresql-client-15 >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15 postgresql-client-15 >/dev/null; }
    [[ -n $added ]] && rm -f "$policy"
fi

mkdir -p "$RIG_DIR"
install -d -m 0700 -o postgres -g postgres "$PG_DIR"
exec 9>"$PG_DIR.lock"
flock -w 60 9 || rig_die "another postgres/up.sh or down.sh holds $PG_DIR.lock"

as_pg() { runuser -u postgres -- "$@"; }
psql_admin() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$RIG_PG_PORT" -d postgres "$@"; }

healthy() {
    [[ -s $PG_PASSWORD_FILE && -s $PG_ENV ]] || return 1
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$RIG_PG_PORT" -d "$PG_DB" || return 1
    # Our cluster (not another server on that port): its postmaster.pid names our data dir.
    as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1 || return 1
    PGPASSWORD=$(cat "$PG_PASSWORD_FILE") "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$RIG_PG_PORT" -U "$PG_ROLE" -d "$PG_DB" \
        -c 'SELECT 1' >/dev/null 2>&1
}

if healthy; then
    exit 0
fi

if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    rig_log "postgres: initdb in $PG_DATA"
    rm -rf "$PG_DATA"
    install -d -m 0700 -o postgres -g postgres "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$PG_DATA/postgresql.conf" <<CONF
# mailplug test rig (tests/rig/postgres/up.sh): loopback only, small.
listen_addresses = '127.0.0.1'
port = $RIG_PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 64MB
password_encryption = scram-sha-256
logging_collector = off
CONF
    cat >"$PG_DATA/pg_hba.conf" <<'HBA'
# mailplug test rig: the postgres user over the socket, everyone else with a password over loopback.
local   all   postgres                peer
host    all   all       127.0.0.1/32  scram-sha-256
HBA
fi
install -d -m 0750 -o postgres -g postgres "$PG_RUN"

if ! as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
    if ss -ltnH "sport = :$RIG_PG_PORT" 2>/dev/null | grep -q .; then
        rig_die "port $RIG_PG_PORT is taken by something else; set RIG_PG_PORT to a free port"
    fi
    rig_log "postgres: starting on 127.0.0.1:$RIG_PG_PORT"
    as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 30 >/dev/null 9>&- \
        || { tail -20 "$PG_LOG" >&2; rig_die "postgres did not start (log: $PG_LOG)"; }
fi

# The role and database; a new random password each time they are (re)made.
if [[ ! -s $PG_PASSWORD_FILE ]]; then
    umask 077
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PG_PASSWORD_FILE.tmp"
    chmod 0600 "$PG_PASSWORD_FILE.tmp"
    mv "$PG_PASSWORD_FILE.tmp" "$PG_PASSWORD_FILE"
fi
chmod 0600 "$PG_PASSWORD_FILE"
# The password goes through stdin, never a command line (ps shows those).
{
    printf "SELECT 'CREATE ROLE %s LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') \\\\gexec\n" "$PG_ROLE" "$PG_ROLE"
    printf "ALTER ROLE %s LOGIN PASSWORD '%s';\n" "$PG_ROLE" "$(cat "$PG_PASSWORD_FILE")"
    printf "SELECT 'CREATE DATABASE %s OWNER %s' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '%s') \\\\gexec\n" "$PG_DB" "$PG_ROLE" "$PG_DB"
} | psql_admin -f - >/dev/null

umask 077
cat >"$PG_ENV.tmp" <<ENV
MAILPLUG_PG_URL=postgres://$PG_ROLE@127.0.0.1:$RIG_PG_PORT/$PG_DB
MAILPLUG_PG_PASSWORD_FILE=$PG_PASSWORD_FILE
ENV
chmod 0600 "$PG_ENV.tmp"
mv "$PG_ENV.tmp" "$PG_ENV"

healthy || rig_die "postgres started but the test role cannot log in (log: $PG_LOG)"
rig_log "postgres: up on 127.0.0.1:$RIG_PG_PORT (env: $PG_ENV)"
