#!/usr/bin/env bash
# Compares `preflight-agent bench` with fio and sysbench on this host (issue 3's acceptance
# table). Runs every pair alternately (preflight, reference, preflight, reference, ...) on the
# same pre-written 1 GiB file with the same block size, queue depth, duration and warm-up, and
# prints for each row the medians, the median of the per-pair ratios (preflight / reference)
# and the CPU seconds (user + system) each tool spent per run. For CPU and memory rows it also
# prints the ratio per CPU second ((figure / CPU s) over the reference's): on a host where
# other work competes for the cores, wall-clock rates measure the scheduler's share as much as
# the code, and this column isolates the code.
#
# Usage: bench/host.sh [DIR]
#   DIR          directory on the disk to measure (default /var/tmp/preflight-bench; not tmpfs)
# Environment:
#   TIME=5       seconds per measured run        WARMUP=1   seconds of warm-up per run
#   PAIRS=3      pairs per row                   SEQ_PAIRS=5  pairs for sequential I/O rows
#   AGENT=path   use this agent binary instead of building target/release/preflight-agent
#   ROWS="..."   only these rows (names as printed), e.g. ROWS="cpu_1t cpu_2t"
#
# Pairs alternate so that a slow phase of a shared machine hits both tools alike; compare the
# ratios, not the absolute figures, when other work runs on the host.
set -euo pipefail

DIR=${1:-/var/tmp/preflight-bench}
TIME=${TIME:-5}
WARMUP=${WARMUP:-1}
PAIRS=${PAIRS:-3}
SEQ_PAIRS=${SEQ_PAIRS:-5}
ROWS=${ROWS:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v fio >/dev/null || need+=(fio)
command -v sysbench >/dev/null || need+=(sysbench)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
    echo "installing ${need[*]} from Debian" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [[ -z ${AGENT:-} ]]; then
    (cd "$REPO" && cargo build --release -q -p preflight-agent)
    AGENT=$REPO/target/release/preflight-agent
fi

mkdir -p "$DIR"
if [[ $(findmnt -n -o FSTYPE -T "$DIR") == tmpfs ]]; then
    echo "$DIR is on tmpfs, which has no disk: pass a directory on the disk to measure" >&2
    exit 2
fi
FILE=$DIR/preflight-vs-reference.dat
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$FILE"' EXIT

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "pre-writing $FILE (1 GiB)" >&2
fio --name=prewrite --filename="$FILE" --rw=write --bs=1m --size=1g --direct=1 \
    --ioengine=psync --output=/dev/null
sync

# run_timed OUT CMD...: runs CMD with stdout to OUT, prints its user+system CPU seconds.
run_timed() {
    local out=$1
    shift
    local TIMEFORMAT='%U %S' t
    t=$({ time "$@" >"$out" 2>"$out.err"; } 2>&1) || {
        echo "failed: $*" >&2
        cat "$out.err" >&2
        exit 1
    }
    awk '{printf "%.2f", $1 + $2}' <<<"$t"
}

RESULTS=$WORK/results
: >"$RESULTS"

# pair ROW PAIRS PF_JQ REF_KIND REF_EXTRACT -- PF_ARGS... -- REF_CMD...
#   PF_JQ: jq filter giving "value p99" from preflight's JSON
#   REF_KIND: fio (REF_EXTRACT is a jq filter giving "value p99") or sysbench (an awk program)
row() {
    local name=$1 n=$2 pf_jq=$3 ref_kind=$4 ref_extract=$5
    shift 5
    [[ -n $ROWS && " $ROWS " != *" $name "* ]] && return 0
    local pf=() ref=()
    while [[ $1 != -- ]]; do pf+=("$1"); shift; done
    shift
    ref=("$@")
    echo "$name: $AGENT ${pf[*]}" >&2
    echo "$name: ${ref[*]}" >&2
    local i
    for ((i = 1; i <= n; i++)); do
        local pcpu rcpu pv rv
        pcpu=$(run_timed "$WORK/pf.json" "$AGENT" "${pf[@]}" --output json)
        pv=$(jq -r "$pf_jq" "$WORK/pf.json")
        rcpu=$(run_timed "$WORK/ref.out" "${ref[@]}")
        if [[ $ref_kind == fio ]]; then
            rv=$(jq -r "$ref_extract" "$WORK/ref.out")
        else
            rv=$(awk "$ref_extract" "$WORK/ref.out")
        fi
        echo "  pair $i: preflight $pv (cpu ${pcpu}s)  reference $rv (cpu ${rcpu}s)" >&2
        echo "$name $pv $rv $pcpu $rcpu" >>"$RESULTS"
    done
}

PJ_READ='"\(.read.iops) \(.read.latency.p99_us)"'
PJ_WRITE='"\(.write.iops) \(.write.latency.p99_us)"'
PJ_READ_MB='"\(.read.mib_per_s) \(.read.latency.p99_us)"'
PJ_WRITE_MB='"\(.write.mib_per_s) \(.write.latency.p99_us)"'
FJ_READ='"\(.jobs[0].read.iops) \(.jobs[0].read.clat_ns.percentile["99.000000"] / 1000)"'
FJ_WRITE='"\(.jobs[0].write.iops) \(.jobs[0].write.clat_ns.percentile["99.000000"] / 1000)"'
FJ_READ_MB='"\(.jobs[0].read.bw_bytes / 1048576) \(.jobs[0].read.clat_ns.percentile["99.000000"] / 1000)"'
FJ_WRITE_MB='"\(.jobs[0].write.bw_bytes / 1048576) \(.jobs[0].write.clat_ns.percentile["99.000000"] / 1000)"'

PFD=(bench disk --filename "$FILE" --size 1g --time "$TIME" --warmup "$WARMUP")
FIO=(fio --name=ref --filename="$FILE" --size=1g --runtime="$TIME" --ramp_time="$WARMUP"
    --time_based --direct=1 --output-format=json)

for rw in randread randwrite; do
    pj=$PJ_READ fj=$FJ_READ
    [[ $rw == randwrite ]] && pj=$PJ_WRITE fj=$FJ_WRITE
    row "${rw}_4k_qd1" "$PAIRS" "$pj" fio "$fj" \
        "${PFD[@]}" --rw "$rw" --bs 4k --iodepth 1 -- \
        "${FIO[@]}" --rw="$rw" --bs=4k --iodepth=1 --ioengine=psync
    row "${rw}_4k_qd32" "$PAIRS" "$pj" fio "$fj" \
        "${PFD[@]}" --rw "$rw" --bs 4k --iodepth 32 -- \
        "${FIO[@]}" --rw="$rw" --bs=4k --iodepth=32 --ioengine=io_uring
done
row read_1m_qd32 "$SEQ_PAIRS" "$PJ_READ_MB" fio "$FJ_READ_MB" \
    "${PFD[@]}" --rw read --bs 1m --iodepth 32 -- \
    "${FIO[@]}" --rw=read --bs=1m --iodepth=32 --ioengine=io_uring
row write_1m_qd32 "$SEQ_PAIRS" "$PJ_WRITE_MB" fio "$FJ_WRITE_MB" \
    "${PFD[@]}" --rw write --bs 1m --iodepth 32 -- \
    "${FIO[@]}" --rw=write --bs=1m --iodepth=32 --ioengine=io_uring

# etcd's recipe: 2300-byte sequential buffered writes over 22 MiB, fdatasync after each;
# the figure is the fdatasync p99 (both columns hold it).
row fdatasync_p99_2300b "$PAIRS" '"\(.fdatasync.p99_us) \(.fdatasync.p99_us)"' fio \
    '"\(.jobs[0].sync.lat_ns.percentile["99.000000"] / 1000) \(.jobs[0].sync.lat_ns.percentile["99.000000"] / 1000)"' \
    bench disk --filename "$FILE" --rw write --bs 2300 --size 22m --direct 0 --fdatasync 1 \
    --time-based 0 --time 300 -- \
    fio --name=ref --filename="$FILE" --rw=write --bs=2300 --size=22m --ioengine=sync \
    --fdatasync=1 --output-format=json

# sysbench 1.0.20 (Debian 12) has no --warmup-time: CPU and memory rows run without warm-up on
# both sides.
# shellcheck disable=SC2016 # awk programs: $4 is awk's field, not the shell's
SB_CPU='/events per second:/ {print $4, 0}'
for t in 1 2; do
    row "cpu_${t}t" "$PAIRS" '"\(.events_per_s) 0"' sysbench "$SB_CPU" \
        bench cpu --threads "$t" --cpu-max-prime 20000 --time "$TIME" -- \
        sysbench cpu --cpu-max-prime=20000 --threads="$t" --time="$TIME" run
done

# shellcheck disable=SC2016
SB_MEM='/MiB transferred/ {gsub(/[()]/, "", $4); print $4, 0}'
for oper in read write; do
    for t in 1 2; do
        row "memory_${oper}_${t}t" "$PAIRS" '"\(.mib_per_s) 0"' sysbench "$SB_MEM" \
            bench memory --memory-oper "$oper" --threads "$t" --memory-block-size 256m \
            --memory-total-size 10000g --time "$TIME" -- \
            sysbench memory --memory-oper="$oper" --threads="$t" --memory-block-size=256M \
            --memory-total-size=10000G --time="$TIME" run
    done
done

echo
echo "host: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
    "disk $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' ')," \
    "fio $(fio --version), $(sysbench --version); TIME=$TIME WARMUP=$WARMUP;" \
    "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
awk -v pairs="$PAIRS" '
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    r = $1
    if (!(r in n)) order[++rows] = r
    k = ++n[r]
    pv[r, k] = $2; rv[r, k] = $4; pp[r, k] = $3; rp[r, k] = $5; pc[r, k] = $6; rc[r, k] = $7
}
END {
    target["randread_4k_qd1"] = ">= 0.95"; target["randwrite_4k_qd1"] = ">= 0.95"
    target["randread_4k_qd32"] = ">= 0.95, p99 <= 1.2x"; target["randwrite_4k_qd32"] = ">= 0.95, p99 <= 1.2x"
    target["read_1m_qd32"] = ">= 0.9"; target["write_1m_qd32"] = ">= 0.9"
    target["fdatasync_p99_2300b"] = "0.8 - 1.25"
    target["cpu_1t"] = "0.95 - 1.05"; target["cpu_2t"] = "0.95 - 1.05"
    unit["fdatasync_p99_2300b"] = "us"; unit["cpu_1t"] = "ev/s"; unit["cpu_2t"] = "ev/s"
    printf "%-20s %10s %10s %7s %9s %9s %8s %9s  %s\n", "row", "preflight", "reference", "ratio", "p99 ratio", "per cpu-s", "cpu s pf", "cpu s ref", "target"
    for (i = 1; i <= rows; i++) {
        r = order[i]; m = n[r]
        for (k = 1; k <= m; k++) {
            a[k] = pv[r, k]; b[k] = rv[r, k]; c[k] = (rv[r, k] > 0) ? pv[r, k] / rv[r, k] : 0
            d[k] = (rp[r, k] > 0) ? pp[r, k] / rp[r, k] : 0; e[k] = pc[r, k]; f[k] = rc[r, k]
            g[k] = (rv[r, k] > 0 && pc[r, k] > 0) ? (pv[r, k] / pc[r, k]) / (rv[r, k] / rc[r, k]) : 0
        }
        mp = median(a, m); mr = median(b, m); mc = median(c, m); md = median(d, m); me = median(e, m); mf = median(f, m)
        mg = (r ~ /^(cpu|memory)/) ? sprintf("%.3f", median(g, m)) : "-"
        if (r ~ /^memory/) unit[r] = "MiB/s"; else if (r ~ /_1m_/) unit[r] = "MiB/s"; else if (!(r in unit)) unit[r] = "IOPS"
        p99 = (r ~ /^rand/) ? sprintf("%.2f", md) : "-"
        t = (r in target) ? target[r] : ">= 0.9"
        printf "%-20s %10.1f %10.1f %7.3f %9s %9s %8.2f %9.2f  %s (%s, n=%d)\n", r, mp, mr, mc, p99, mg, me, mf, t, unit[r], m
        if (r == "cpu_1t") c1 = mp
        if (r == "cpu_2t") c2 = mp
    }
    if (c1 > 0 && c2 > 0) printf "preflight cpu 2-thread scaling: %.2fx (target >= 1.9x)\n", c2 / c1
}' <(awk '{print $1, $2, $3, $4, $5, $6, $7}' "$RESULTS")
