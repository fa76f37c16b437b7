#!/usr/bin/env bash
# Package verification throughput: `preflight-agent package verify` against `sha256sum` on the
# same files (warm page cache for both), alternating pairs; prints the median of the per-pair
# throughput ratios (preflight / sha256sum; target >= 0.9).
#   bench/package.sh            (FILES=4 SIZE_MIB=256 PAIRS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-4}; SIZE_MIB=${SIZE_MIB:-256}; PAIRS=${PAIRS:-5}
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p preflight-agent
agent=$TARGET/release/preflight-agent
dir=$(mktemp -d -p "${BENCH_DIR:-/var/tmp}")
trap 'rm -rf "$dir"' EXIT
plan=$dir/plan.toml
printf '[batch]\nproject = "bench"\nbatch = "bench"\n\n[[servers]]\naddress = "127.0.0.1"\nhostname = "bench"\nrole = "app"\n\n' > "$plan"
for i in $(seq "$FILES"); do
  f=$dir/file-$i.bin
  head -c $((SIZE_MIB << 20)) /dev/urandom > "$f"
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  printf '[[packages]]\npath = "%s"\nsize = %s\nsha256 = "%s"\nkind = "app"\n\n' "$f" "$(stat -c %s "$f")" "$sum" >> "$plan"
done
"$agent" package verify --plan "$plan" --output json > /dev/null   # warm the cache, check the plan
now() { date +%s.%N; }
ratios=()
for p in $(seq "$PAIRS"); do
  t0=$(now); "$agent" package verify --plan "$plan" --output json > /dev/null; t1=$(now)
  sha256sum "$dir"/file-*.bin > /dev/null; t2=$(now)
  r=$(awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.3f", (c-b)/(b-a) }')
  echo "pair $p: preflight $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s, sha256sum $(awk -v b="$t1" -v c="$t2" 'BEGIN{printf "%.2f", c-b}') s, throughput ratio $r"
  ratios+=("$r")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
echo "package verify vs sha256sum, $FILES x $SIZE_MIB MiB: median throughput ratio $median (target >= 0.9)"
