# Shared by tests/load/*.sh: where the load rig lives and how to find what it started.
# The load rig is a second Dovecot (from the same Debian packages as tests/rig) with 1,000
# passwd-file users, raised process and client limits, IMAP IDLE, POP3 and LMTP on free loopback
# ports, in its own folder ($LOAD_DIR, default /tmp/mailplug-load). It never touches the
# shared rig (tests/rig): it only reads the rig's CA to sign its own server certificate.

# shellcheck source=../rig/common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../rig/common.sh"

LOAD_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOAD_DIR=${MAILPLUG_LOAD_DIR:-/tmp/mailplug-load}
LOAD_DIR=${LOAD_DIR%/}
case "$LOAD_DIR" in
    /tmp/* | /var/tmp/*) ;;
    *) rig_die "MAILPLUG_LOAD_DIR must be under /tmp or /var/tmp (got $LOAD_DIR)" ;;
esac
LOAD_USERS_N=${LOAD_USERS_N:-1000}
LOAD_DOMAIN=load.test
# Each user has a uid of its own (LOAD_UID_BASE + n): Linux allows 128 inotify instances per
# uid, and every idling IMAP session of a user watches its maildir with one; 1,000 sessions
# under one uid would make Dovecot fall back to checking every 30 s.
LOAD_UID_BASE=41000
LOAD_MARKER=$LOAD_DIR/.mailplug-load
LOAD_ENV=$LOAD_DIR/load.env
LOAD_FINGERPRINT=$LOAD_DIR/.fingerprint
LOAD_TLS=$LOAD_DIR/tls
LOAD_CA=$LOAD_TLS/ca.pem
LOAD_MAIL=$LOAD_DIR/mail
LOAD_LOGS=$LOAD_DIR/logs
LOAD_DOVECOT=$LOAD_DIR/dovecot
LOAD_DOVECOT_CONF=$LOAD_DOVECOT/dovecot.conf
LOAD_DOVECOT_USERS=$LOAD_DOVECOT/users
LOAD_DOVECOT_BASE=$LOAD_DOVECOT/run
LOAD_DOVECOT_LOG=$LOAD_LOGS/dovecot.log

load_log() { printf 'load: %s\n' "$*" >&2; }

# The n-th user's login and password (n from 0).
load_user() { printf 'user%04d@%s\n' "$1" "$LOAD_DOMAIN"; }
load_pass() { printf 'Load-%04d-pw!\n' "$1"; }

# The load Dovecot's master pid, if it runs with our config.
load_dovecot_pid() {
    local pid
    pid=$(head -n1 "$LOAD_DOVECOT_BASE/master.pid" 2>/dev/null) || return 0
    [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$LOAD_DOVECOT_CONF" && echo "$pid"
    return 0
}

# Three free loopback ports (the kernel's choice; the listeners bind them right after).
load_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

load_lock() {
    mkdir -p "$LOAD_DIR"
    exec 8>"$LOAD_DIR/.lock"
    flock -w 180 8 || rig_die "timed out waiting for the load rig's lock $LOAD_DIR/.lock"
}
