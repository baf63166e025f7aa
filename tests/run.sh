#!/usr/bin/env bash
# Runs every test: guest unit tests, host unit tests, and the integration tests against real
# Dovecot and Postfix over real TLS. Installs what it needs; safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
step "running all tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
# A short coverage-guided run of every fuzz target (tests/fuzz.sh; the long runs are in
# docs/SECURITY.md), counted as one test per target.
step "fuzzing each parser and session briefly (tests/fuzz.sh)"
bash "$ROOT/tests/fuzz.sh" 2>&1 | tee -a "$log" || status=$?
# One plain closing line with the totals over every test binary and fuzz target.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^fuzz: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
