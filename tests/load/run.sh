#!/usr/bin/env bash
# The whole load benchmark of `mailplug serve` in one command (issue 13; docs/BENCHMARKS.md,
# "serve under load"): builds what is missing, starts the load rig (tests/load/up.sh) and an
# SMTP sink, runs tests/load/measure.py (1,000 mailboxes in 100 tenant files, an idle phase, a
# loaded phase with mail through LMTP, the outbox), prints the table and tears everything down.
# About 8 to 10 minutes. Runs as root (the load rig's Dovecot).
#
# Usage: bash tests/load/run.sh [measure.py options: --rate 15 --load-secs 120 --idle-secs 60
#                                --poll-secs 60 --outbox 200 --tenants 100]
# Environment: MAILPLUG_BIN / MAILPLUG_WASM (else built: LOAD_PROFILE, default bench-fast, and
# the release component), CARGO_TARGET_DIR, LOAD_KEEP=1 keeps the load rig and the work folder.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=common.sh
source "$HERE/common.sh"
[[ $(id -u) -eq 0 ]] || rig_die "tests/load/run.sh must run as root (the load rig's Dovecot)"
[[ -x /usr/sbin/smtp-sink ]] || rig_die "/usr/sbin/smtp-sink is missing (Debian package postfix)"

export PATH=$HOME/.cargo/bin:$PATH
target=${CARGO_TARGET_DIR:-$ROOT/target}
bin=${MAILPLUG_BIN:-}
wasm=${MAILPLUG_WASM:-}
profile=${LOAD_PROFILE:-bench-fast}
if [[ -z "$wasm" ]]; then
    load_log "building the component (release)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$target cargo build --quiet --release -p mailplug-plugin --target wasm32-wasip2)
    wasm=$target/wasm32-wasip2/release/mailplug_plugin.wasm
fi
if [[ -z "$bin" ]]; then
    load_log "building mailplug ($profile)"
    (cd "$ROOT" && CARGO_TARGET_DIR=$target cargo build --quiet --profile "$profile" -p mailplug-host --bin mailplug)
    dir=$profile
    [[ $profile == dev ]] && dir=debug
    bin=$target/$dir/mailplug
fi
[[ -x "$bin" && -r "$wasm" ]] || rig_die "no mailplug binary ($bin) or component ($wasm)"

sink_pid=""
cleanup() {
    # smtp-sink ends by SIGTERM (status 143): not a failure of the benchmark.
    if [[ -n "$sink_pid" ]]; then kill "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; fi
    if [[ "${LOAD_KEEP:-}" != 1 ]]; then bash "$HERE/down.sh" || true; fi
}
trap cleanup EXIT

bash "$HERE/up.sh"
# shellcheck disable=SC1090
source "$LOAD_DIR/load.env"

# The outbox's SMTP server: Postfix's smtp-sink on a free loopback port (accepts everything).
for try in 1 2 3 4 5; do
    read -r sink_port < <(load_free_ports 1)
    /usr/sbin/smtp-sink -u nobody "127.0.0.1:$sink_port" 256 </dev/null >/dev/null 2>&1 &
    sink_pid=$!
    for ((i = 0; i < 100; i++)); do
        rig_port_listening 127.0.0.1 "$sink_port" && break 2
        kill -0 "$sink_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill "$sink_pid" 2>/dev/null || true
    sink_pid=""
done
[[ -n "$sink_pid" ]] || rig_die "smtp-sink did not start"

work=$LOAD_DIR/work
rm -rf "$work"
mkdir -p "$work"
load_log "measuring (serve's log: $work/serve.log); load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
python3 "$HERE/measure.py" --env "$LOAD_ENV" --bin "$bin" --wasm "$wasm" --work "$work" --sink-port "$sink_port" "$@"
