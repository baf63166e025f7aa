#!/usr/bin/env bash
# Shared set-up for the demo and the tests, safe to run again: the wasm target, wasm-tools,
# the real mail servers on loopback, and the builds. Sourced by host-demo/demo.sh and tests/run.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mailplug-target}"
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  step "installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

if ! command -v wasm-tools >/dev/null 2>&1; then
  step "installing wasm-tools from crates.io (first run only, a few minutes)"
  cargo install wasm-tools --locked --version 1.263.0
fi

# CI builds from a fresh clone, so incremental state would only pile up in the cache.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# The build cache is shared across runs; when the disk runs low, drop this workspace's own
# artifacts (every stale test binary) and keep the compiled dependencies.
free_kb=$(df -Pk "$(dirname "$CARGO_TARGET_DIR")" | awk 'NR == 2 { print $4 }')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((10 * 1024 * 1024)) ] && [ -d "$CARGO_TARGET_DIR" ]; then
  step "less than 10 GB free: removing this workspace's old build artifacts from $CARGO_TARGET_DIR"
  rm -rf "$CARGO_TARGET_DIR"/*/incremental
  (cd "$ROOT" && cargo clean --quiet -p mailplug-tests -p mailplug-host -p mailplug-plugin) || true
fi

# The admin page's browser tests (tests/e2e/admin_browser.rs) drive Debian's headless Chromium
# through chromedriver; installed only when missing.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  step "installing Debian's chromium and chromium-driver (browser tests)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
fi

step "starting Dovecot and Postfix on loopback (tests/rig/up.sh)"
bash "$ROOT/tests/rig/up.sh"
step "starting PostgreSQL 15 on loopback (tests/rig/postgres/up.sh)"
bash "$ROOT/tests/rig/postgres/up.sh"
export MAILPLUG_REQUIRE_PG=1

step "building the component (wasm32-wasip2, release)"
(cd "$ROOT" && cargo build --quiet --release -p mailplug-plugin --target wasm32-wasip2)
step "building the host"
(cd "$ROOT" && cargo build --quiet --workspace --bins --tests)

export MAILPLUG_WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release/mailplug_plugin.wasm"
export MAILPLUG_BIN="$CARGO_TARGET_DIR/debug/mailplug"
export MAILPLUG_RIG_DIR="${MAILPLUG_RIG_DIR:-/tmp/mailplug-rig}"
