#!/usr/bin/env bash
# Network comparison: preflight bandwidth vs iperf3, preflight connect sweep vs nmap -sT.
# (Listing listeners vs `ss` is bench/ports.sh.)
#
# Two ways of running preflight's side:
#   - "agents": the real thing, `preflight bandwidth --from bench-a --to bench-b` through a
#     controller and two `preflight-agent run` processes on 127.0.0.81/.82 (release binaries);
#     CPU is that of both agent processes (/proc/PID/stat), throughput the receiver's figure.
#   - netbench (crates/preflight-probe/examples/netbench.rs): the same library calls the agent's
#     handlers make (BandwidthReceiver::start/wait and bandwidth::send with the default 128 KiB
#     writes, netprobe::scan_ports), without gRPC, so it also runs between namespaces.
#
# Runs each pair alternately (the first tool of a pair alternates) and prints the median ratio
# (preflight / reference) per figure:
#   - TCP bandwidth, 128 KiB writes, DURATION s, 1 and 4 streams, on loopback and (as root) on a
#     veth pair between two network namespaces: throughput ratio (target >= 0.9) and CPU
#     seconds per byte ratio, both processes of each tool counted (target <= 1.0).
#   - connect sweep of all 65535 ports of 127.0.0.1 vs `nmap -sT -n -Pn -p 1-65535`: wall time
#     ratio (target <= 1.0, aim 0.5) and whether the same open ports were found.
#
# Environment: PAIRS (default 3), DURATION (default 10), NETBENCH (a prebuilt netbench binary;
# default: build it with cargo), BIN_DIR (prebuilt preflight and preflight-agent; default: build
# them with cargo --release), SKIP_VETH=1, SKIP_SWEEP=1, SKIP_BW=1, SKIP_AGENTS=1.
# Traffic goes only to 127.0.0.1 and to 10.77.200.0/24 inside namespaces this script creates
# (named pf-<pid>-bench-*, removed on exit; tests' cleanup_stale also removes leftovers).
set -euo pipefail

PAIRS=${PAIRS:-3}
DURATION=${DURATION:-10}
WRITE=131072
HERE=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
NS_A="pf-$$-bench-a"
NS_B="pf-$$-bench-b"
ADDR_A=10.77.200.1
ADDR_B=10.77.200.2
TOKEN=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')

cleanup() {
	for pid in ${AGENT_PIDS:-} ${CTL_PID:-}; do kill "$pid" 2>/dev/null || true; done
	for ns in "$NS_A" "$NS_B"; do
		if [ -e "/run/netns/$ns" ]; then
			for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
			ip netns del "$ns" 2>/dev/null || true
		fi
	done
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

need() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing $*: install them (apt-get install $*) or run as root" >&2
		exit 1
	fi
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
missing=()
need iperf3 || missing+=(iperf3)
need nmap || missing+=(nmap)
need jq || missing+=(jq)
[ -x /usr/bin/time ] || missing+=(time)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if [ -z "${NETBENCH:-}" ]; then
	(cd "$HERE" && cargo build --release -q -p preflight-probe --example netbench)
	NETBENCH="$HERE/target/release/examples/netbench"
fi
[ -x "$NETBENCH" ] || { echo "netbench binary $NETBENCH not found" >&2; exit 1; }
if [ -z "${SKIP_AGENTS:-}" ] && [ -z "${SKIP_BW:-}" ] && [ -z "${BIN_DIR:-}" ]; then
	(cd "$HERE" && cargo build --release -q -p preflight-agent -p preflight-cli)
	BIN_DIR="$HERE/target/release"
fi

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# user+system seconds from a /usr/bin/time -f '%U %S' output file (last line)
cpu_of() { tail -n1 "$1" | awk '{print $1+$2}'; }
now() { date +%s.%N; }

# wait_port NS PORT: until something listens on PORT in namespace NS ("" = here), at most 10 s
wait_port() {
	local ns=$1 port=$2 i
	for i in $(seq 1 500); do
		if in_ns "$ns" ss -Hltn "sport = :$port" | grep -q .; then return 0; fi
		sleep 0.02
	done
	echo "nothing listens on port $port after 10 s" >&2
	return 1
}
in_ns() {
	local ns=$1
	shift
	if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# one preflight bandwidth run: prints "mbit cpu_s bytes"
run_preflight_bw() {
	local srv_ns=$1 cli_ns=$2 addr=$3 streams=$4 port=5301
	in_ns "$srv_ns" /usr/bin/time -f '%U %S' -o "$WORK/ps.time" \
		"$NETBENCH" receive --bind "$addr:$port" --token "$TOKEN" --streams "$streams" \
		--max-duration 60 --ttl 120 >"$WORK/ps.json" 2>/dev/null &
	local srv=$!
	wait_port "$srv_ns" $port
	in_ns "$cli_ns" /usr/bin/time -f '%U %S' -o "$WORK/pc.time" \
		"$NETBENCH" send --to "$addr:$port" --token "$TOKEN" --streams "$streams" \
		--duration "$DURATION" --write-size $WRITE >"$WORK/pc.json"
	wait $srv
	local mbit bytes cpu
	mbit=$(jq -r .total_mbit_per_s "$WORK/ps.json")
	bytes=$(jq -r .total_bytes "$WORK/ps.json")
	cpu=$(echo "$(cpu_of "$WORK/ps.time") $(cpu_of "$WORK/pc.time")" | awk '{print $1+$2}')
	echo "$mbit $cpu $bytes"
}

# A controller on 127.0.0.80 and agents bench-a (127.0.0.81) and bench-b (127.0.0.82).
start_agents() {
	"$BIN_DIR/preflight" serve --init --listen 127.0.0.80:0 --data "$WORK/ctl" --heartbeat-interval 1s \
		>"$WORK/ctl.out" 2>&1 &
	CTL_PID=$!
	local i addr=""
	for i in $(seq 1 200); do
		addr=$(sed -n 's/.*controller listening on \([0-9.:]*\).*/\1/p' "$WORK/ctl.out" | head -n1)
		[ -n "$addr" ] && break
		sleep 0.05
	done
	[ -n "$addr" ] || { echo "controller did not start: $(cat "$WORK/ctl.out")" >&2; exit 1; }
	export PREFLIGHT_CONTROLLER="https://$addr" PREFLIGHT_CONFIG=/dev/null
	PREFLIGHT_TOKEN=$(grep -o 'pfa_[A-Za-z0-9_]*' "$WORK/ctl.out" | head -n1)
	PREFLIGHT_CA_SHA256=$(sed -n 's/^CA pin (sha256): *//p' "$WORK/ctl.out" | head -n1)
	export PREFLIGHT_TOKEN PREFLIGHT_CA_SHA256
	AGENT_PIDS=""
	for a in a:81 b:82; do
		local name=bench-${a%%:*} ip=127.0.0.${a##*:} jt
		jt=$("$BIN_DIR/preflight" token create --ttl 10m --output json | jq -r .token)
		"$BIN_DIR/preflight-agent" enroll --controller "$PREFLIGHT_CONTROLLER" --token "$jt" \
			--ca-sha256 "$PREFLIGHT_CA_SHA256" --name "$name" --listen "$ip:0" --state-dir "$WORK/$name" >/dev/null
		PREFLIGHT_LOG=warn "$BIN_DIR/preflight-agent" run --state-dir "$WORK/$name" >/dev/null 2>&1 &
		AGENT_PIDS="$AGENT_PIDS $!"
	done
	for i in $(seq 1 200); do
		if [ "$("$BIN_DIR/preflight" agents --output json | jq '[.[] | select(.online)] | length')" = 2 ]; then
			return 0
		fi
		sleep 0.1
	done
	echo "agents did not come online" >&2
	exit 1
}
# CPU seconds (user + system) used so far by the agent processes
agents_cpu() {
	local pid t=0
	for pid in $AGENT_PIDS; do t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
	echo "$t $(getconf CLK_TCK)" | awk '{print $1/$2}'
}
# one run through the agents: prints "mbit cpu_s bytes" (srv_ns, cli_ns and addr are unused)
run_agents_bw() {
	local streams=$4 c0 c1
	c0=$(agents_cpu)
	"$BIN_DIR/preflight" bandwidth --from bench-a --to bench-b --duration "$DURATION" \
		--streams "$streams" --output json >"$WORK/ab.json"
	c1=$(agents_cpu)
	echo "$(jq -r .report.total_mbit_per_s "$WORK/ab.json") $(echo "$c0 $c1" | awk '{print $2-$1}') $(jq -r .report.total_bytes "$WORK/ab.json")"
}

# one iperf3 run: prints "mbit cpu_s bytes" (receiver-side figures)
run_iperf_bw() {
	local srv_ns=$1 cli_ns=$2 addr=$3 streams=$4 port=5302
	in_ns "$srv_ns" /usr/bin/time -f '%U %S' -o "$WORK/is.time" \
		iperf3 -s -1 -B "$addr" -p $port >/dev/null 2>&1 &
	local srv=$!
	wait_port "$srv_ns" $port
	in_ns "$cli_ns" /usr/bin/time -f '%U %S' -o "$WORK/ic.time" \
		iperf3 -c "$addr" -p $port -t "$DURATION" -l $WRITE -P "$streams" -J >"$WORK/ic.json"
	wait $srv || true
	local mbit bytes cpu
	mbit=$(jq -r '.end.sum_received.bits_per_second / 1e6' "$WORK/ic.json")
	bytes=$(jq -r '.end.sum_received.bytes' "$WORK/ic.json")
	cpu=$(echo "$(cpu_of "$WORK/is.time") $(cpu_of "$WORK/ic.time")" | awk '{print $1+$2}')
	echo "$mbit $cpu $bytes"
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"

# bw_figure LABEL SRV_NS CLI_NS ADDR STREAMS [RUNNER (default run_preflight_bw)]
bw_figure() {
	local label=$1 srv_ns=$2 cli_ns=$3 addr=$4 streams=$5 runner=${6:-run_preflight_bw} i ours ref
	: >"$WORK/tp" && : >"$WORK/cpb"
	for i in $(seq 1 "$PAIRS"); do
		if [ $((i % 2)) -eq 1 ]; then
			ours=$($runner "$srv_ns" "$cli_ns" "$addr" "$streams")
			ref=$(run_iperf_bw "$srv_ns" "$cli_ns" "$addr" "$streams")
		else
			ref=$(run_iperf_bw "$srv_ns" "$cli_ns" "$addr" "$streams")
			ours=$($runner "$srv_ns" "$cli_ns" "$addr" "$streams")
		fi
		echo "  $label pair $i: preflight $ours | iperf3 $ref   (Mbit/s cpu_s bytes)" >&2
		echo "$ours $ref" | awk '{print $1/$4}' >>"$WORK/tp"
		echo "$ours $ref" | awk '{print ($2/$3)/($5/$6)}' >>"$WORK/cpb"
	done
	printf '%-56s %8.3f   %s\n' "$label throughput" "$(median <"$WORK/tp")" ">= 0.9" >>"$RESULTS"
	printf '%-56s %8.3f   %s\n' "$label cpu seconds per byte" "$(median <"$WORK/cpb")" "<= 1.0" >>"$RESULTS"
}

if [ -z "${SKIP_BW:-}" ]; then
	if [ -z "${SKIP_AGENTS:-}" ]; then
		start_agents
		for s in 1 4; do
			bw_figure "bandwidth loopback via agents, $s stream(s)" "" "" 127.0.0.82 $s run_agents_bw
		done
	fi
	for s in 1 4; do
		bw_figure "bandwidth loopback, $s stream(s)" "" "" 127.0.0.1 $s
	done
	if [ -z "${SKIP_VETH:-}" ] && [ "$(id -u)" -eq 0 ] && need ip; then
		ip netns add "$NS_A"
		ip netns add "$NS_B"
		ip -n "$NS_A" link add eth0 type veth peer name eth0 netns "$NS_B"
		for ns in "$NS_A" "$NS_B"; do ip -n "$ns" link set lo up; done
		ip -n "$NS_A" addr add $ADDR_A/24 dev eth0
		ip -n "$NS_B" addr add $ADDR_B/24 dev eth0
		ip -n "$NS_A" link set eth0 up
		ip -n "$NS_B" link set eth0 up
		for s in 1 4; do
			bw_figure "bandwidth veth netns, $s stream(s)" "$NS_B" "$NS_A" $ADDR_B $s
		done
	else
		echo "veth figures skipped (need root and ip, or SKIP_VETH is set)" >&2
	fi
fi

if [ -z "${SKIP_SWEEP:-}" ]; then
	: >"$WORK/sweep"
	same=yes
	for i in $(seq 1 "$PAIRS"); do
		run_ours() {
			local t0 t1
			t0=$(now)
			"$NETBENCH" scan --ip 127.0.0.1 --ports 1-65535 --timeout-ms 500 >"$WORK/scan.json"
			t1=$(now)
			ours_t=$(echo "$t0 $t1" | awk '{print $2-$1}')
			jq -r '.open[]' "$WORK/scan.json" | sort -n >"$WORK/open.ours"
		}
		run_nmap() {
			local t0 t1
			t0=$(now)
			nmap -sT -n -Pn -p 1-65535 127.0.0.1 -oG "$WORK/nmap.gnmap" >/dev/null
			t1=$(now)
			nmap_t=$(echo "$t0 $t1" | awk '{print $2-$1}')
			grep -o 'Ports: .*' "$WORK/nmap.gnmap" | tr ',' '\n' | grep '/open/' |
				sed -E 's#^[^0-9]*([0-9]+)/open.*#\1#' | sort -n >"$WORK/open.nmap" || true
		}
		if [ $((i % 2)) -eq 1 ]; then run_ours; run_nmap; else run_nmap; run_ours; fi
		echo "  sweep pair $i: preflight ${ours_t}s ($(wc -l <"$WORK/open.ours") open) | nmap ${nmap_t}s ($(wc -l <"$WORK/open.nmap") open)" >&2
		echo "$ours_t $nmap_t" | awk '{print $1/$2}' >>"$WORK/sweep"
		if ! cmp -s "$WORK/open.ours" "$WORK/open.nmap"; then
			same=no
			echo "  open ports differ: preflight [$(tr '\n' ' ' <"$WORK/open.ours")] nmap [$(tr '\n' ' ' <"$WORK/open.nmap")]" >&2
		fi
	done
	printf '%-56s %8.3f   %s\n' "connect sweep 65535 ports, time" "$(median <"$WORK/sweep")" "<= 1.0 (aim 0.5)" >>"$RESULTS"
	printf '%-56s %8s   %s\n' "connect sweep, same open ports found" "$same" "yes" >>"$RESULTS"
fi

echo
echo "preflight / reference, median of $PAIRS alternating pairs (bandwidth: ${DURATION} s, 128 KiB writes)"
printf '%-56s %8s   %s\n' "figure" "ratio" "target"
cat "$RESULTS"
