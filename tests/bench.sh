#!/usr/bin/env bash
# The benchmark: the runtime's costs (CLI start with and without the compile cache, instantiation
# with and without the pool, idle instance memory), then mailplug's ingest (fetch, parse, store)
# against the raw transfer of the same bytes and against Python's imaplib/poplib peers, in one
# run on the local real servers.
# Usage: bash tests/bench.sh [MESSAGES] [KB_PER_MESSAGE] [RUNS]
#        bash tests/bench.sh runtime [CLI_RUNS] [INSTANTIATIONS]   (the runtime part only)
#        bash tests/bench.sh send [MESSAGES] [KB] [RUNS]   (batch send against smtp-sink, see tests/bench/send.rs)
#        bash tests/bench.sh send-steps [MESSAGES] [ROUNDS]   (the component's steps of a batch send, no network: tests/bench/steps.rs)
#        bash tests/bench.sh corpus [MESSAGES] [RUNS]   (the generated corpus, also the CLI and the native peer)
#        bash tests/bench.sh parse [MESSAGES] [ROUNDS]   (the component's MIME parsing of that corpus, no network: tests/bench/parse.rs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The corpus mode reads the CLI's peak memory from GNU time.
if [ ! -x /usr/bin/time ]; then
  step "installing GNU time (Debian package time) for the CLI's peak memory"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
fi
cd "$ROOT"
step "building the benchmark (optimised)"
cargo build --quiet --profile bench-fast -p mailplug-tests --bin mailplug-bench
cargo build --quiet --profile bench-fast -p mailplug-host --bin mailplug
# The CLI timed is the optimised one beside the benchmark.
MAILPLUG_BIN="$CARGO_TARGET_DIR/bench-fast/mailplug" "$CARGO_TARGET_DIR/bench-fast/mailplug-bench" "$@"
