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

step "starting Dovecot and Postfix on loopback (tests/rig/up.sh)"
bash "$ROOT/tests/rig/up.sh"

step "building the component (wasm32-wasip2, release)"
(cd "$ROOT" && cargo build --quiet --release -p mailplug-plugin --target wasm32-wasip2)
step "building the host"
(cd "$ROOT" && cargo build --quiet --workspace --bins --tests)

export MAILPLUG_WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release/mailplug_plugin.wasm"
export MAILPLUG_BIN="$CARGO_TARGET_DIR/debug/mailplug"
export MAILPLUG_RIG_DIR="${MAILPLUG_RIG_DIR:-/tmp/mailplug-rig}"
