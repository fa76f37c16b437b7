#!/usr/bin/env bash
# Load on the controller, and a connection flood on an agent, with the real binaries on loopback.
#
#  1. A controller and AGENTS real agent processes (each on its own 127.0.x.y address), all
#     heartbeating every HEARTBEAT.
#  2. REQUESTS concurrent CLI requests at once (a mix of `agents`, `status` and `inventory AGENT`,
#     the last going through to an agent): client-side latency (process start, TLS, the call)
#     p50/p99/max, the controller's own p99 from its /metrics histogram for the burst, and the
#     controller's RSS (peak sampled during the burst, and VmHWM).
#  3. FLOOD idle TCP connections plus FLOOD half-open TLS handshakes (a ClientHello cut short)
#     held open on one agent's port while the controller asks that agent for its inventory:
#     how many of those calls succeed and how long they take.
#
# Usage: bench/load.sh [AGENTS] [REQUESTS] [FLOOD]   (defaults: 200 500 2000)
#   BUILD=release bench/load.sh   uses a release build in target/release (default: the debug
#   binaries in target/debug, built with `cargo build --bins`); BIN_DIR=DIR uses prebuilt
#   preflight and preflight-agent binaries. HEARTBEAT=1s by default.
set -euo pipefail
AGENTS=${1:-200}
REQUESTS=${2:-500}
FLOOD=${3:-2000}
HEARTBEAT=${HEARTBEAT:-1s}
cd "$(dirname "$0")/.."

if [ -n "${BIN_DIR:-}" ]; then
  BIN=$(cd "$BIN_DIR" && pwd)
elif [ "${BUILD:-debug}" = release ]; then
  cargo build --release -p preflight-agent -p preflight-cli >&2
  BIN=$PWD/target/release
else
  cargo build --bins >&2
  BIN=$PWD/target/debug
fi
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- controller -------------------------------------------------------------------------------
PREFLIGHT_LOG=warn "$BIN/preflight" serve --init --listen 127.0.0.1:0 --data "$work/data" \
  --heartbeat-interval "$HEARTBEAT" >"$work/ctl.out" 2>"$work/ctl.err" &
ctl_pid=$!
pids+=("$ctl_pid")
for _ in $(seq 600); do
  grep -q "controller listening on" "$work/ctl.err" 2>/dev/null && break
  sleep 0.1
done
addr=$(grep -o "controller listening on [^ ]*" "$work/ctl.err" | awk '{print $4}')
[ -n "$addr" ] || { echo "controller did not start:" >&2; cat "$work/ctl.err" >&2; exit 1; }
export PREFLIGHT_CONTROLLER="https://$addr"
PREFLIGHT_TOKEN=$(grep -o 'pfa_[A-Za-z0-9_]*' "$work/ctl.out" | head -1)
PREFLIGHT_CA_SHA256=$(sed -n 's/^CA pin (sha256): //p' "$work/ctl.out")
export PREFLIGHT_TOKEN PREFLIGHT_CA_SHA256
export PREFLIGHT_CONFIG=/dev/null
echo "controller on $addr (pid $ctl_pid), binaries: $BIN"

# --- agents -----------------------------------------------------------------------------------
enroll() {
  local i=$1 ip="127.0.$((1 + $1 / 250)).$((1 + $1 % 250))"
  local tok
  tok=$("$BIN/preflight" token create --ttl 1h --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  PREFLIGHT_LOG=warn "$BIN/preflight-agent" enroll --controller "$PREFLIGHT_CONTROLLER" --token "$tok" \
    --ca-sha256 "$PREFLIGHT_CA_SHA256" --name "load-$i" --listen "$ip:0" --state-dir "$work/a/$i" >/dev/null
}
export -f enroll
export BIN work
t0=$(date +%s)
seq 0 $((AGENTS - 1)) | xargs -P 4 -I{} bash -c 'enroll {}'
for i in $(seq 0 $((AGENTS - 1))); do
  PREFLIGHT_LOG=error "$BIN/preflight-agent" run --state-dir "$work/a/$i" >/dev/null 2>&1 &
  pids+=($!)
done
online() { "$BIN/preflight" agents --output json | python3 -c 'import json,sys; print(sum(1 for a in json.load(sys.stdin) if a.get("online")))'; }
for _ in $(seq 300); do
  n=$(online)
  [ "$n" -ge "$AGENTS" ] && break
  sleep 1
done
echo "agents online: $n of $AGENTS (enrolled and started in $(( $(date +%s) - t0 )) s)"
agent_rss=$(for p in "${pids[@]:1}"; do awk '/VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null; done | sort -n | awk '{a[NR]=$1; s+=$1} END {printf "median %d KiB, total %d MiB", a[int((NR+1)/2)], s/1024}')
echo "agent RSS: $agent_rss"
sleep 3 # a few heartbeat rounds

# --- the burst --------------------------------------------------------------------------------
metrics() { curl -sk "https://$addr/metrics"; }
metrics >"$work/m0"
rss_sampler() {
  local max=0 v
  while kill -0 "$ctl_pid" 2>/dev/null && [ ! -e "$work/burst.done" ]; do
    v=$(awk '/VmRSS/{print $2}' "/proc/$ctl_pid/status")
    [ "$v" -gt "$max" ] && max=$v
    sleep 0.05
  done
  echo "$max" >"$work/rss.max"
}
rss_sampler &
sampler=$!
one() {
  local i=$1 s e rc
  s=$(date +%s%N)
  case $((i % 3)) in
    0) "$BIN/preflight" agents --output json >/dev/null 2>"$work/r/$i.err" && rc=0 || rc=$? ;;
    1) "$BIN/preflight" status --output json >/dev/null 2>"$work/r/$i.err" && rc=0 || rc=$? ;;
    2) "$BIN/preflight" inventory "load-$((i % AGENTS))" --output json >/dev/null 2>"$work/r/$i.err" && rc=0 || rc=$? ;;
  esac
  e=$(date +%s%N)
  echo "$(( (e - s) / 1000 )) $rc" >"$work/r/$i"
}
mkdir -p "$work/r"
t0=$(date +%s%N)
rpids=()
for i in $(seq 1 "$REQUESTS"); do one "$i" & rpids+=($!); done
wait "${rpids[@]}" || true
t1=$(date +%s%N)
touch "$work/burst.done"
wait "$sampler" 2>/dev/null || true
metrics >"$work/m1"
hwm=$(awk '/VmHWM/{print $2}' "/proc/$ctl_pid/status")
python3 - "$work" "$REQUESTS" "$(( (t1 - t0) / 1000000 ))" "$(cat "$work/rss.max")" "$hwm" <<'PY'
import os, re, sys
work, n, wall, rss, hwm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
lat, fails, shed = [], 0, 0
for i in range(1, n + 1):
    us, rc = open(f"{work}/r/{i}").read().split()
    lat.append(int(us) / 1000)
    if rc != "0":
        fails += 1
        if "RESOURCE_EXHAUSTED" in open(f"{work}/r/{i}.err").read() or "over capacity" in open(f"{work}/r/{i}.err").read():
            shed += 1
errs = {}
for i in range(1, n + 1):
    e = open(f"{work}/r/{i}.err").read().strip()
    if e:
        errs[e[:160]] = errs.get(e[:160], 0) + 1
for e, c in sorted(errs.items(), key=lambda x: -x[1])[:3]:
    print(f"  {c} x {e}")
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"burst: {n} concurrent CLI requests in {wall} ms; failed {fails} (shed {shed})")
print(f"client latency (process start + TLS + call): p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, max {lat[-1]:.0f} ms")
def hist(path):
    h = {}
    for line in open(path):
        m = re.match(r'preflight_rpc_duration_seconds_bucket\{method="([^"]+)",le="([^"]+)"\} (\d+)', line)
        if m and "Heartbeat" not in m.group(1):
            le = float("inf") if m.group(2) == "+Inf" else float(m.group(2))
            h[le] = h.get(le, 0) + int(m.group(3))
    return h
h0, h1 = hist(f"{work}/m0"), hist(f"{work}/m1")
d = sorted((le, h1[le] - h0.get(le, 0)) for le in h1)
total = d[-1][1] if d else 0
p99 = next((le for le, c in d if total and c >= 0.99 * total), None)
p50 = next((le for le, c in d if total and c >= 0.5 * total), None)
print(f"controller-side (its /metrics histogram, {total} RPCs of the burst): p50 <= {p50} s, p99 <= {p99} s")
print(f"controller RSS: peak sampled during the burst {rss / 1024:.1f} MiB, VmHWM {hwm / 1024:.1f} MiB")
PY

# --- connection flood on one agent -------------------------------------------------------------
target=$("$BIN/preflight" agents --output json | python3 -c 'import json,sys; print([a["listen_addr"] for a in json.load(sys.stdin) if a["id"]=="load-0"][0])')
echo "flood: $FLOOD idle TCP + $FLOOD half-open TLS connections on load-0 at $target"
python3 - "$target" "$FLOOD" "$work/flood.ready" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n, ready = int(sys.argv[2]), sys.argv[3]
# A TLS 1.2 ClientHello record header announcing 512 bytes, then only a few of them.
partial = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]) + b"\x00" * 16
socks, failed = [], 0
stop_at = time.time() + 20  # connections the kernel no longer takes are counted, not waited for
for i in range(2 * n):
    if time.time() > stop_at:
        failed += 2 * n - i
        break
    try:
        s = socket.create_connection((host, int(port)), timeout=0.5)
        if i % 2:
            s.send(partial)
        socks.append(s)
    except OSError:
        failed += 1
open(ready, "w").write(f"{len(socks)} {failed}")
time.sleep(25)
PY
flood_pid=$!
pids+=("$flood_pid")
for _ in $(seq 600); do [ -e "$work/flood.ready" ] && break; sleep 0.1; done
[ -e "$work/flood.ready" ] || { echo "the flood did not start" >&2; exit 1; }
read -r opened refused <"$work/flood.ready" || true
echo "flood: $opened connections open, $refused not taken by the kernel (backlog full) or timed out"
ok=0; lats=()
for i in 1 2 3 4 5 6 7 8 9 10; do
  s=$(date +%s%N)
  if "$BIN/preflight" inventory load-0 --output json >/dev/null 2>"$work/flood.err"; then ok=$((ok + 1)); fi
  lats+=($(( ($(date +%s%N) - s) / 1000000 )))
  sleep 0.5
done
echo "during the flood the controller got load-0's inventory $ok/10 times; latencies ms: ${lats[*]}"
[ "$ok" -eq 10 ] || { echo "last error: $(cat "$work/flood.err")"; }
kill "$flood_pid" 2>/dev/null || true
