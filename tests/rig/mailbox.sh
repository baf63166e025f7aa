#!/usr/bin/env bash
# Small helper for the rig's Dovecot mailboxes (INBOX only).
#   mailbox.sh clear USER          expunge every message in USER's INBOX
#   mailbox.sh count USER          print the number of messages in USER's INBOX
#   mailbox.sh put USER FILE       save FILE (an RFC 5322 message; - for stdin) into USER's INBOX
#   mailbox.sh wait USER N [SECS]  wait until USER's INBOX holds at least N messages (default 15 s)
#   mailbox.sh dump USER           print every message in USER's INBOX (headers and body)
# USER is a login (support@example.test) or just its local part (support).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[[ $# -ge 2 ]] || usage
cmd=$1
user=$(rig_login "$2")
[[ -r "$DOVECOT_CONF" ]] || rig_die "no rig config at $DOVECOT_CONF: run tests/rig/up.sh first"
doveadm_() { doveadm -c "$DOVECOT_CONF" "$@"; }

count() {
    local out n
    out=$(doveadm_ -f flow mailbox status -u "$user" messages INBOX) || return 1
    n=$(printf '%s\n' "$out" | sed -n 's/.*messages=\([0-9][0-9]*\).*/\1/p')
    [[ -n "$n" ]] || rig_die "unexpected doveadm output: $out"
    printf '%s\n' "$n"
}

case "$cmd" in
    clear)
        [[ $# -eq 2 ]] || usage
        doveadm_ expunge -u "$user" mailbox INBOX all
        ;;
    count)
        [[ $# -eq 2 ]] || usage
        count
        ;;
    put)
        [[ $# -eq 3 ]] || usage
        if [[ "$3" == - ]]; then
            doveadm_ save -u "$user" -m INBOX
        else
            [[ -r "$3" ]] || rig_die "cannot read $3"
            doveadm_ save -u "$user" -m INBOX <"$3"
        fi
        ;;
    wait)
        [[ $# -eq 3 || $# -eq 4 ]] || usage
        want=$3
        secs=${4:-15}
        deadline=$((SECONDS + secs))
        while :; do
            n=$(count)
            ((n >= want)) && { echo "$n"; exit 0; }
            ((SECONDS >= deadline)) && rig_die "$user has $n message(s) in INBOX after ${secs}s, wanted $want"
            sleep 0.2
        done
        ;;
    dump)
        [[ $# -eq 2 ]] || usage
        doveadm_ fetch -u "$user" text mailbox INBOX all
        ;;
    *)
        usage
        ;;
esac
