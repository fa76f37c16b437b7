#!/usr/bin/env bash
# Sweep scale: one controller and up to 200 real agents (each its own `preflight-agent run`
# process serving mutual-TLS gRPC on its own 127.0.1.x address), swept at 50, 100 and 200
# servers, without the disk and bandwidth checks (issue #6: the time grows at most linearly and
# 200 agents finish within 15 s on a 2-core machine).
#
# For each size N the plan lists the first N agents (addresses 127.0.1.1..N, hostnames
# scale-001..N) with CPU/memory/disk/clock minima, one planned port per server and a required
# path from the first server to every other one, and the script times `preflight sweep` end to
# end (CLI start to verdict), RUNS times, and prints the median and the time per server
# relative to the 50-server sweep (<= 1.0 means at most linear).
#
# Environment: SIZES (default "50 100 200"), RUNS (default 3), BIN_DIR (prebuilt preflight and
# preflight-agent; default: cargo build --release), SKIP (checks left out, default
# "disk bandwidth"), KEEP=1 keeps the work directory.
# Traffic goes only to 127.0.0.1 and 127.0.1.0/24.
set -euo pipefail

SIZES=${SIZES:-"50 100 200"}
RUNS=${RUNS:-3}
SKIP=${SKIP:-"disk bandwidth"}
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PIDS=()

cleanup() {
	for pid in "${PIDS[@]}" ${CTL_PID:-}; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

command -v jq >/dev/null || {
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null
	else
		echo "jq is missing: apt-get install jq, or run as root" >&2
		exit 1
	fi
}
if [ -z "${BIN_DIR:-}" ]; then
	(cd "$HERE" && cargo build --release -q -p preflight-agent -p preflight-cli)
	BIN_DIR="$HERE/target/release"
fi
PF="$BIN_DIR/preflight"
AGENT="$BIN_DIR/preflight-agent"
MAX=0
for n in $SIZES; do [ "$n" -gt "$MAX" ] && MAX=$n; done
[ "$MAX" -le 250 ] || { echo "at most 250 servers (addresses 127.0.1.1-250)" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# --- controller --------------------------------------------------------------------------------
PREFLIGHT_LOG=warn "$PF" serve --init --listen 127.0.0.1:0 --data "$WORK/data" >"$WORK/ctl.out" 2>"$WORK/ctl.err" &
CTL_PID=$!
for _ in $(seq 600); do
	grep -q '^controller listening on ' "$WORK/ctl.err" "$WORK/ctl.out" 2>/dev/null && break
	sleep 0.1
done
ADDR=$(grep -ho '^controller listening on [^ ]*' "$WORK/ctl.err" "$WORK/ctl.out" | awk '{print $4}')
[ -n "$ADDR" ] || { echo "controller did not start:" >&2; cat "$WORK/ctl.err" >&2; exit 1; }
export PREFLIGHT_CONTROLLER="https://$ADDR"
PREFLIGHT_TOKEN=$(grep -h '^ *pfa_' "$WORK/ctl.out" "$WORK/ctl.err" | head -n1 | tr -d ' ')
PREFLIGHT_CA_SHA256=$(sed -n 's/^CA pin (sha256): //p' "$WORK/ctl.out" "$WORK/ctl.err" | head -n1)
export PREFLIGHT_TOKEN PREFLIGHT_CA_SHA256 PREFLIGHT_CONFIG=/dev/null

# --- agents --------------------------------------------------------------------------------------
name() { printf 'scale-%03d' "$1"; }
enroll() {
	local i=$1 id token
	id=$(name "$i")
	token=$("$PF" token create --ttl 1h --output json | jq -r .token)
	PREFLIGHT_LOG=warn "$AGENT" enroll --controller "$PREFLIGHT_CONTROLLER" --token "$token" \
		--ca-sha256 "$PREFLIGHT_CA_SHA256" --name "$id" --listen "127.0.1.$i:7444" \
		--state-dir "$WORK/agents/$id" >/dev/null
}
export -f enroll name
export PF AGENT WORK
started=0
start_agents() {
	local upto=$1 t0
	t0=$(date +%s.%N)
	seq $((started + 1)) "$upto" | xargs -P 4 -I{} bash -c 'enroll {}'
	for i in $(seq $((started + 1)) "$upto"); do
		PREFLIGHT_LOG=warn "$AGENT" run --state-dir "$WORK/agents/$(name "$i")" >/dev/null 2>&1 &
		PIDS+=($!)
	done
	started=$upto
	# wait until every agent is online
	for _ in $(seq 600); do
		online=$("$PF" agents --output json | jq '[.[] | select(.online == true)] | length')
		[ "$online" -ge "$upto" ] && break
		sleep 0.5
	done
	printf 'agents: %d online (enrolled and started in %.1f s)\n' "$online" "$(echo "$(date +%s.%N) - $t0" | bc)"
}

plan() {
	local n=$1 f="$WORK/plan-$1.toml"
	{
		printf '[thresholds]\nmin_cores = 1\nmin_memory_mib = 64\nmin_free_disk_gib = 0\nmax_clock_skew_ms = 5000\n\n'
		for i in $(seq 1 "$n"); do
			printf '[[servers]]\naddress = "127.0.1.%d"\nhostname = "%s"\nrole = "%s"\ndata_dirs = ["%s"]\n' \
				"$i" "$(name "$i")" "$([ "$i" -eq 1 ] && echo lb || echo app)" "$WORK"
			printf 'apps = [{ name = "svc", ports = [%d] }]\n\n' $((20000 + i))
		done
		for i in $(seq 2 "$n"); do printf '[[paths]]\nfrom = { role = "lb" }\nto = { server = "%s" }\nports = [%d]\n\n' "$(name "$i")" $((20000 + i)); done
	} >"$f"
	echo "$f"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

skip_args=()
if "$PF" sweep --help | grep -q -- '--skip'; then
	for s in $SKIP; do skip_args+=(--skip "$s"); done
fi

echo "sweep scale: controller $ADDR, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), binaries $BIN_DIR"
printf '%8s %10s %14s %10s %s\n' servers "median s" "ms per server" "vs 50" "verdicts"
base=""
for n in $SIZES; do
	start_agents "$n"
	p=$(plan "$n")
	"$PF" plan check "$p" >/dev/null
	times=()
	for r in $(seq "$RUNS"); do
		t0=$(date +%s.%N)
		set +e
		"$PF" sweep --plan "$p" --batch "scale-$n" "${skip_args[@]}" --output json >"$WORK/sweep-$n-$r.json" 2>"$WORK/sweep-$n-$r.err"
		rc=$?
		set -e
		t1=$(date +%s.%N)
		[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { echo "sweep failed (exit $rc):" >&2; cat "$WORK/sweep-$n-$r.err" >&2; exit 1; }
		times+=("$(echo "$t1 - $t0" | bc)")
	done
	med=$(printf '%s\n' "${times[@]}" | median)
	per=$(echo "scale=2; $med * 1000 / $n" | bc)
	[ -n "$base" ] || base=$per
	verdicts=$(jq -r '[.findings[]? | .verdict] | group_by(.) | map("\(.[0])=\(length)") | join(" ")' "$WORK/sweep-$n-1.json" 2>/dev/null || echo "?")
	printf '%8d %10.2f %14.2f %10.2f %s\n' "$n" "$med" "$per" "$(echo "scale=3; $per / $base" | bc)" "$verdicts"
done
