#!/usr/bin/env bash
# CPU time and context switches per durable FLAG.SET (fsync always), from
# `perf stat -p` around redis-benchmark, at 10 and 50 clients: load-robust
# evidence next to durable_writes.sh's wall clock. With FLAGSTAFF_BIN_B set,
# alternates the build (A) and that binary (B), two rounds each.
# Usage: benches/durable_cpu.sh [requests]. Last line: A's CPU per write at 50 clients.
source "$(dirname "$0")/lib.sh"
N=${1:-4000}
build_release
DEF='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}'
BINS=("A=$BIN"); [ -n "${FLAGSTAFF_BIN_B:-}" ] && BINS+=("B=$FLAGSTAFF_BIN_B")
last=""
for rep in 1 2; do
    for entry in "${BINS[@]}"; do
        name=${entry%%=*}; bin=${entry#*=}
        P=$(free_port)
        BIN=$bin start_flagstaff "$P" "$WORK/$name-$rep"
        pid=${PIDS[-1]}
        for c in 10 50; do
            perf stat -x, -e task-clock,context-switches -p "$pid" -o "$WORK/stat" -- \
                redis-benchmark -q -p "$P" -c "$c" -n "$N" -r 1000 FLAG.SET 'bench:__rand_int__' "$DEF" >/dev/null 2>&1
            line=$(python3 - "$WORK/stat" "$N" "$name" "$c" <<'PY'
import sys
d = {}
for l in open(sys.argv[1]):
    f = l.strip().split(',')
    if len(f) > 3 and f[0] and f[0][0].isdigit():
        d[f[2]] = float(f[0])
n = int(sys.argv[2])
print(f"{sys.argv[3]} clients={sys.argv[4]} cpu_per_write_us={d.get('task-clock', 0) * 1000 / n:.1f} switches_per_write={d.get('context-switches', 0) / n:.2f}")
PY
            )
            echo "$line"
            [ "$name" = A ] && [ "$c" = 50 ] && last=$line
        done
        kill "$pid"; wait "$pid" 2>/dev/null || true
    done
done
echo "$last"
