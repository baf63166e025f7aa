#!/usr/bin/env bash
# Runs every test: guest unit tests, host unit tests, and the integration tests against real
# Dovecot and Postfix over real TLS. Installs what it needs; safe to run again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
step "running all tests"
cargo test --workspace --no-fail-fast
