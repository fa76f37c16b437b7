#!/usr/bin/env bash
# Disk benchmark at the device's limit (issue 22): `preflight-agent bench disk` against fio,
# 4 KiB random read and write with O_DIRECT at queue depths 1, 8, 32 and 128, many alternating
# pairs on one file laid out by fio once. For each row it prints the median of the per-pair
# IOPS ratios (preflight / fio), the best-of-runs ratio (preflight's best run over fio's best
# run: the figure a deployer compares with a customer's fio run on a fast disk) and the CPU
# time (user + system, the whole process) each tool spent per I/O.
#
# Usage: bench/disk-limit.sh [DIR]
#   DIR          directory on the disk to measure (default /var/tmp/preflight-bench; not tmpfs)
# Environment:
#   PAIRS=15     alternating pairs per row      TIME=4    seconds per measured run
#   WARMUP=1     unmeasured seconds before each run (fio's ramp_time)
#   SIZE=512m    test file size                 QDS="1 8 32 128"   RWS="randread randwrite"
#   AGENT=path   use this agent binary instead of building target/release/preflight-agent
#   FIO_EXTRA="--fixedbufs=1 ..."   extra fio options (default: none, as a customer runs fio)
#   Smoke check: TIME=2 PAIRS=5 QDS="1 32" bench/disk-limit.sh
#
# Queue depth 1 compares with fio's psync engine (preflight's engine there), deeper queues with
# fio's io_uring engine. Within a pair the order alternates (preflight first on odd pairs, fio
# first on even ones) so that a slow phase of a shared machine or a device's burst credit
# favours neither tool. CPU per I/O is (user + system seconds of the process and its children,
# from getrusage via bash's `time`) / (IOPS × (TIME + WARMUP)), the same formula for both.
set -euo pipefail

DIR=${1:-/var/tmp/preflight-bench}
PAIRS=${PAIRS:-15}
TIME=${TIME:-4}
WARMUP=${WARMUP:-1}
SIZE=${SIZE:-512m}
QDS=${QDS:-1 8 32 128}
RWS=${RWS:-randread randwrite}
FIO_EXTRA=${FIO_EXTRA:-}
REPO=$(cd "$(dirname "$0")/.." && pwd)

need=()
command -v fio >/dev/null || need+=(fio)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "missing ${need[*]}: run as root to install them, or apt-get install ${need[*]}" >&2
        exit 1
    fi
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
FILE=$DIR/disk-limit.dat
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" "$FILE"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_START=$(load)
echo "load average before: $LOAD_START" >&2
echo "laying out $FILE ($SIZE) with fio" >&2
fio --name=layout --filename="$FILE" --rw=write --bs=1m --size="$SIZE" --direct=1 \
    --ioengine=psync --output=/dev/null
sync

# run_timed OUT CMD...: runs CMD with stdout to OUT; prints its user+system CPU seconds. A run
# refused because another disk benchmark holds the host's lock (an agent's, a test's) is
# retried for up to a minute.
run_timed() {
    local out=$1
    shift
    local TIMEFORMAT='%3U %3S' t try
    for ((try = 0; ; try++)); do
        if t=$({ time "$@" >"$out" 2>"$out.err"; } 2>&1); then
            break
        fi
        if ((try < 60)) && grep -q "another disk benchmark is running" "$out.err"; then
            sleep 1
            continue
        fi
        echo "failed: $*" >&2
        cat "$out.err" >&2
        exit 1
    done
    awk '{printf "%.3f", $1 + $2}' <<<"$t"
}

RESULTS=$WORK/results
: >"$RESULTS"
read -r -a fio_extra <<<"$FIO_EXTRA"

for rw in $RWS; do
    dir="read"
    [[ $rw == randwrite ]] && dir="write"
    for qd in $QDS; do
        engine=io_uring
        ((qd == 1)) && engine=psync
        name="${rw}_qd${qd}"
        pf=("$AGENT" bench disk --filename "$FILE" --size "$SIZE" --rw "$rw" --bs 4k
            --iodepth "$qd" --time "$TIME" --warmup "$WARMUP" --direct 1 --output json)
        ref=(fio --name=ref --filename="$FILE" --size="$SIZE" --rw="$rw" --bs=4k
            --iodepth="$qd" --ioengine="$engine" --direct=1 --runtime="$TIME"
            --ramp_time="$WARMUP" --time_based --output-format=json "${fio_extra[@]}")
        echo "$name: ${pf[*]}" >&2
        echo "$name: ${ref[*]}" >&2
        for ((i = 1; i <= PAIRS; i++)); do
            order=(pf ref)
            ((i % 2 == 0)) && order=(ref pf)
            for who in "${order[@]}"; do
                if [[ $who == pf ]]; then
                    pcpu=$(run_timed "$WORK/pf.json" "${pf[@]}")
                    read -r pv pp < <(jq -r ".$dir | \"\(.iops) \(.latency.p99_us)\"" \
                        "$WORK/pf.json")
                else
                    rcpu=$(run_timed "$WORK/ref.json" "${ref[@]}")
                    read -r rv rp < <(jq -r ".jobs[0].$dir |
                        \"\(.iops) \(.clat_ns.percentile[\"99.000000\"] / 1000)\"" \
                        "$WORK/ref.json")
                fi
            done
            printf '  pair %2d: preflight %8.0f IOPS (cpu %ss)  fio %8.0f IOPS (cpu %ss)  load %s\n' \
                "$i" "$pv" "$pcpu" "$rv" "$rcpu" "$(load)" >&2
            echo "$name $pv $rv $pp $rp $pcpu $rcpu" >>"$RESULTS"
        done
    done
done

echo
echo "host: $(nproc) CPUs, disk $(findmnt -n -o SOURCE,FSTYPE -T "$DIR" | tr -s ' '), $(fio --version);" \
    "PAIRS=$PAIRS TIME=$TIME WARMUP=$WARMUP SIZE=$SIZE, 4 KiB, O_DIRECT${FIO_EXTRA:+, fio $FIO_EXTRA}"
echo "load average before: $LOAD_START, after: $(load)"
awk -v secs="$(awk -v t="$TIME" -v w="$WARMUP" 'BEGIN {print t + w}')" '
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    r = $1
    if (!(r in n)) order[++rows] = r
    k = ++n[r]
    pv[r, k] = $2; rv[r, k] = $3; pp[r, k] = $4; rp[r, k] = $5; pc[r, k] = $6; rc[r, k] = $7
}
END {
    printf "%-15s %9s %9s %7s %9s %9s %7s %8s %8s %6s %6s  %s\n", "row", "pf med", "fio med", "median", "pf best",
        "fio best", "best", "pf us/io", "fio us/io", "cpu", "p99", "acceptance (qd >= 32: median, best >= 0.97, cpu <= 1)"
    printf "%-15s %9s %9s %7s %9s %9s %7s %8s %8s %6s %6s\n", "", "IOPS", "IOPS", "ratio", "IOPS", "IOPS", "ratio", "cpu", "cpu",
        "ratio", "ratio"
    fails = 0
    for (i = 1; i <= rows; i++) {
        r = order[i]; m = n[r]; bp = 0; br = 0
        for (k = 1; k <= m; k++) {
            a[k] = pv[r, k]; b[k] = rv[r, k]
            c[k] = (rv[r, k] > 0) ? pv[r, k] / rv[r, k] : 0
            d[k] = (rp[r, k] > 0) ? pp[r, k] / rp[r, k] : 0
            e[k] = (pv[r, k] > 0) ? pc[r, k] / (pv[r, k] * secs) * 1e6 : 0
            f[k] = (rv[r, k] > 0) ? rc[r, k] / (rv[r, k] * secs) * 1e6 : 0
            if (pv[r, k] > bp) bp = pv[r, k]
            if (rv[r, k] > br) br = rv[r, k]
        }
        mp = median(a, m); mr = median(b, m); mc = median(c, m); md = median(d, m)
        me = median(e, m); mf = median(f, m)
        best = (br > 0) ? bp / br : 0
        cpu = (mf > 0) ? me / mf : 0
        verdict = "-"
        if (r ~ /_qd(32|128)$/) {
            ok = (mc >= 0.97 && best >= 0.97 && cpu <= 1.0)
            verdict = ok ? "pass" : "FAIL"
            if (!ok) fails++
        }
        printf "%-15s %9.0f %9.0f %7.3f %9.0f %9.0f %7.3f %8.2f %8.2f %6.2f %6.2f  %s (n=%d)\n", r, mp, mr, mc, bp, br,
            best, me, mf, cpu, md, verdict, m
    }
    if (fails) printf "%d row(s) below the acceptance line\n", fails
}' "$RESULTS"
