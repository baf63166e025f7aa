#!/usr/bin/env bash
# Stops the load rig's Dovecot and removes its folder (tests/load/up.sh starts it again).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
[[ $(id -u) -eq 0 ]] || rig_die "tests/load/down.sh must run as root"
[[ -d "$LOAD_DIR" ]] || exit 0
[[ -e "$LOAD_MARKER" ]] || rig_die "$LOAD_DIR is not a load rig dir (no $LOAD_MARKER); not touching it"
load_lock
pid=$(load_dovecot_pid)
if [[ -n "$pid" ]]; then
    load_log "stopping the load Dovecot (pid $pid)"
    rig_terminate 20 "$pid"
fi
rm -rf "$LOAD_TLS" "$LOAD_DOVECOT" "$LOAD_MAIL" "$LOAD_LOGS" "$LOAD_ENV" "$LOAD_FINGERPRINT" "$LOAD_DIR/doveadm" \
       "$LOAD_DIR/work"
load_log "down"
