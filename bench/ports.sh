#!/usr/bin/env bash
# Listing listening sockets with 10,000 established loopback connections present:
#   preflight-agent ports --tcp --no-processes --output json   vs  ss -ltn      (target <= 1.5x)
#   preflight-agent ports --output json (tcp+udp, processes)   vs  ss -ltnup    (target <= 1.0x)
# Each pair runs both commands back to back (the order alternates from pair to pair), each
# measurement being LOOPS consecutive runs; the script prints the median of the per-pair ratios
# preflight/ss. Run as root so that both tools see every process.
#
# Usage: bench/ports.sh [PAIRS] [LOOPS]     (defaults: 7 pairs, 20 runs per measurement)
set -euo pipefail

PAIRS=${1:-7}
LOOPS=${2:-20}
CONNS=5000 # client+server pairs, so 2 x CONNS established sockets

cd "$(dirname "$0")/.."
command -v ss >/dev/null || { echo "ss (iproute2) is needed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

cargo build --release -p preflight-agent >&2
AGENT=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/preflight-agent

# The holder needs two fds per pair plus a few; stay under the hard limit.
need=$((2 * CONNS + 64))
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $need ]]; then
    echo "the hard open-files limit $hard is below $need; raise it or lower CONNS" >&2
    exit 1
fi
ulimit -n "$need"

work=$(mktemp -d)
holder_pid=""
cleanup() {
    if [[ -n $holder_pid ]]; then kill "$holder_pid" 2>/dev/null || true; wait "$holder_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Holds CONNS established client/server pairs on 127.0.0.1 until killed.
cat >"$work/hold.py" <<'EOF'
import socket, sys, time
n = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
addr = srv.getsockname()
held = []
for _ in range(n):
    c = socket.create_connection(addr)
    s, _ = srv.accept()
    held += [c, s]
srv.close()
print("ready", flush=True)
while True:
    time.sleep(3600)
EOF
python3 "$work/hold.py" "$CONNS" >"$work/ready" &
holder_pid=$!
for _ in $(seq 1 300); do
    [[ -s $work/ready ]] && break
    kill -0 "$holder_pid" 2>/dev/null || { echo "the connection holder died" >&2; exit 1; }
    sleep 0.1
done
[[ -s $work/ready ]] || { echo "the connection holder did not get ready in 30 s" >&2; exit 1; }
established=$(ss -Htn state established | wc -l)
echo "established TCP sockets: $established" >&2

# Prints the wall time in nanoseconds of LOOPS runs of the given command.
time_loops() {
    local start end i
    start=$(date +%s%N)
    for ((i = 0; i < LOOPS; i++)); do "$@" >/dev/null; done
    end=$(date +%s%N)
    echo $((end - start))
}

# compare NAME -- PREFLIGHT_CMD... -- SS_CMD...
compare() {
    local name=$1; shift; shift
    local a=() b=()
    while [[ $1 != -- ]]; do a+=("$1"); shift; done
    shift
    b=("$@")
    "${a[@]}" >/dev/null; "${b[@]}" >/dev/null # warm caches
    local ratios=() p s pair
    for ((pair = 0; pair < PAIRS; pair++)); do
        if ((pair % 2 == 0)); then
            p=$(time_loops "${a[@]}"); s=$(time_loops "${b[@]}")
        else
            s=$(time_loops "${b[@]}"); p=$(time_loops "${a[@]}")
        fi
        ratios+=("$(python3 -c "print(f'{$p/$s:.3f}')")")
        printf '  pair %d: preflight %.2f ms/run, ss %.2f ms/run, ratio %s\n' "$pair" \
            "$(python3 -c "print($p/1e6/$LOOPS)")" "$(python3 -c "print($s/1e6/$LOOPS)")" "${ratios[-1]}" >&2
    done
    local median
    median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
    printf '%-55s median ratio %s  (%d pairs x %d runs)\n' "$name" "$median" "$PAIRS" "$LOOPS"
}

compare "ports --tcp --no-processes vs ss -ltn" -- \
    "$AGENT" ports --tcp --no-processes --output json -- ss -ltn
compare "ports (tcp+udp, with processes) vs ss -ltnup" -- \
    "$AGENT" ports --output json -- ss -ltnup
