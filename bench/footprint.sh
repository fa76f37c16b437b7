#!/usr/bin/env bash
# Footprint of the agent next to prometheus node_exporter, measured the same way on the same
# machine: stripped binary size, and resident memory (VmRSS from /proc) after 60 s idle — the
# agent heartbeating to a local controller every 10 s, node_exporter serving and unscraped.
#   bench/footprint.sh            (IDLE=60 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-60}
TARGET=${CARGO_TARGET_DIR:-target}

if ! command -v prometheus-node-exporter >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null
    systemctl stop prometheus-node-exporter 2>/dev/null || true
  else
    echo "prometheus-node-exporter is missing: run as root to install it" >&2; exit 1
  fi
fi
cargo build --release --bins -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

bin=$TARGET/release
"$bin/preflight" serve --init --data "$work/ctl" --listen 127.0.0.1:0 >"$work/ctl.out" 2>"$work/ctl.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "controller listening on" "$work/ctl.err" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^controller listening on \([^ ]*\).*/\1/p' "$work/ctl.err")
pin=$(sed -n 's/^CA pin (sha256): //p' "$work/ctl.out")
token=$(grep -o 'pfa_[0-9a-f]*' "$work/ctl.out")
export PREFLIGHT_CONTROLLER="https://$addr" PREFLIGHT_TOKEN="$token" PREFLIGHT_CA_SHA256="$pin" PREFLIGHT_CONFIG=/dev/null
join=$("$bin/preflight" token create --output json | sed -n 's/.*"token": "\([^"]*\)".*/\1/p')
"$bin/preflight-agent" enroll --controller "https://$addr" --token "$join" --ca-sha256 "$pin" \
  --name footprint --state-dir "$work/agent" --listen 127.0.0.31:0 >/dev/null
PREFLIGHT_LOG=warn "$bin/preflight-agent" run --state-dir "$work/agent" &
agent=$!; pids+=("$agent")
prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >/dev/null 2>&1 &
ne=$!; pids+=("$ne")

echo "idling $IDLE s ..." >&2
sleep "$IDLE"
rss() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
agent_rss=$(rss "$agent"); ne_rss=$(rss "$ne")
online=$("$bin/preflight" agents --output json | grep -c '"online": true' || true)

strip -o "$work/ne" "$(command -v prometheus-node-exporter)"
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", b/1048576}'; }
agent_size=$(mib "$bin/preflight-agent"); ne_size=$(mib "$work/ne")

printf '%-34s %12s %16s %8s\n' "" "preflight-agent" "node_exporter" "ratio"
printf '%-34s %12s %16s %8s\n' "stripped binary (MiB)" "$agent_size" "$ne_size" "$(awk -v a="$agent_size" -v b="$ne_size" 'BEGIN{printf "%.2f", a/b}')"
printf '%-34s %12s %16s %8s\n' "RSS after ${IDLE}s idle (MiB)" "$agent_rss" "$ne_rss" "$(awk -v a="$agent_rss" -v b="$ne_rss" 'BEGIN{printf "%.2f", a/b}')"
echo "agent online at the controller: $online (targets: binary <= 8 MiB, idle RSS <= 10 MiB)"
