#!/usr/bin/env bash
# Instructions the server executes per FLAG.EVAL request (valgrind callgrind,
# all threads, counted only while redis-benchmark runs): a load-independent
# figure for comparing builds on a shared machine. compare.sh's flag and
# context, -c 50 -P 16. Usage: benches/eval_instructions.sh [requests] [callgrind.out]
# (FLAGSTAFF_BIN=<binary> measures another build).
source "$(dirname "$0")/lib.sh"
N=${1:-100000}
OUT=${2:-$WORK/callgrind.out}
build_release
P=$(free_port)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
    "$BIN" --port "$P" --data-dir "$WORK/fs" --log-level warn --http-port 0 2>"$WORK/vg.log" &
VG=$!
PIDS+=($VG)
wait_pong "$P"
redis-cli -p "$P" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
redis-benchmark -p "$P" -c 50 -P 16 -n 1000 -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX" >/dev/null 2>&1
callgrind_control -i on "$VG" >/dev/null 2>&1
redis-benchmark -q -p "$P" -c 50 -P 16 -n "$N" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX" >/dev/null 2>&1
callgrind_control -i off "$VG" >/dev/null 2>&1
kill -INT "$VG"; wait "$VG" 2>/dev/null || true
total=$(grep -E '^(summary|totals):' "$OUT" | tail -1 | awk '{print $2}')
echo "instructions per FLAG.EVAL (-P 16): $(python3 -c "print(round($total/$N))")"
