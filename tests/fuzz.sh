#!/usr/bin/env bash
# Coverage-guided fuzzing of the guest's parsers and sessions (plugin/fuzz, cargo-fuzz over
# libFuzzer). Self-contained and idempotent: installs cargo-fuzz if missing, builds the
# targets into a persistent directory, runs each target, prints its executions and crashes,
# exits non-zero on any crash, and ends with "fuzz: N passed, M failed".
#
#   bash tests/fuzz.sh                        # CI: every target for FUZZ_SECONDS (default 5) s
#   bash tests/fuzz.sh --runs 10000000 mime   # long run: a number of executions per target
#
# The toolchain is stable; RUSTC_BOOTSTRAP=1 lets it accept the -Z flags cargo-fuzz passes.
# Built like the shipped component: release (-O, so without debug assertions: mail-parser has a
# debug_assert! that malformed MIME reaches and that release builds compile out, see
# parse::tests::mail_parser_debug_assertion_is_contained), and with no sanitizer (-s none): the
# guest is safe Rust, so libFuzzer's own crash detection (panics, which abort as in the
# panic=abort component, out-of-memory, timeouts) is what matters, and runs are several times
# faster without AddressSanitizer.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
export CARGO_TARGET_DIR="${MAILPLUG_FUZZ_TARGET_DIR:-/var/tmp/mailplug-fuzz-target}"
WORK="${MAILPLUG_FUZZ_WORK:-$CARGO_TARGET_DIR/fuzz-work}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-5}"
RUNS=""
if [ "${1:-}" = "--runs" ]; then
    RUNS="$2"
    shift 2
fi
ALL=(imap_response pop3_response smtp_reply mime autoconfig oauth_token imap_session pop3_session smtp_session imap_resume smtp_batch)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked >/dev/null
fi

cd "$ROOT/plugin"
echo "fuzz: building ${#TARGETS[@]} targets into $CARGO_TARGET_DIR"
mkdir -p "$WORK"
if ! cargo fuzz build -O -s none >"$WORK/build.log" 2>&1; then
    tail -30 "$WORK/build.log"
    echo "fuzz: 0 passed, ${#TARGETS[@]} failed (the fuzz targets did not build)"
    exit 1
fi
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"

passed=0
failed=0
for t in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$t"
    artifacts="$WORK/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    log="$WORK/$t.log"
    if [ -n "$RUNS" ]; then limit=(-runs="$RUNS"); else limit=(-max_total_time="$SECONDS_PER_TARGET"); fi
    status=0
    start=$(date +%s)
    # The committed seeds are read, never written; new inputs go to the persistent corpus.
    "$BIN/$t" "${limit[@]}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "$ROOT/plugin/fuzz/seeds/$t" >"$log" 2>&1 || status=$?
    secs=$(( $(date +%s) - start ))
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
    crashes=$(( $(find "$artifacts" -type f | wc -l) - before ))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    echo "fuzz: $t: ${execs:-0} executions in ${secs} s, ${cov:-cov: ?}, $crashes crashes"
    if [ "$status" -eq 0 ] && [ "$crashes" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 || true
        echo "fuzz: $t: reproduce with $BIN/$t $(find "$artifacts" -type f | tail -1); log in $log"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
