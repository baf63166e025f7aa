#!/usr/bin/env bash
# Stops the Dovecot, Postfix and OAuth2 server that tests/rig/up.sh started (found by the PID
# files in the run dir and checked against this rig's config), and waits for them to exit.
# Touches nothing else.
# Leaves the run dir (logs, mail) in place for inspection; up.sh recreates it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

if [[ ! -e "$RIG_MARKER" ]]; then
    rig_log "no rig at $RIG_DIR"
    exit 0
fi
rig_lock
rig_stop
rm -f "$RIG_FINGERPRINT"
if ! busy=$(rig_wait_ports_free); then
    rig_log "warning: rig ports still accept connections: $(echo $busy)"
fi
"$HERE/postgres/down.sh"
rig_log "down"
