#!/usr/bin/env bash
# Crash safety, the long version: tests/tests/e2e_crash.rs with ITERATIONS (default 100) SIGKILLs
# of the controller during sweeps, hardening audits (evidence appends) and workflow
# transitions, restarting it each time and checking that nothing acknowledged was lost, the
# evidence chain verifies and the workflow replays consistently. Prints the iterations survived.
# The suite runs the same test with 10 iterations.
#
# Usage: bench/crash.sh [ITERATIONS]        (PREFLIGHT_CRASH_SEED=N replays a run's kill times)
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=${1:-100}
cargo build --bins >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
PREFLIGHT_CRASH_ITERATIONS=$ITERATIONS cargo test -p preflight-tests --test e2e_crash -- --nocapture 2>&1 | tee "$log" | grep -E -A4 "^crash test|panicked" >&2
rc=${PIPESTATUS[0]}
set -e
grep "iterations survived" "$log" || echo "crash test FAILED: see the output above"
exit "$rc"
