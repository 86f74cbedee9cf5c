#!/usr/bin/env bash
# OFREP single-flag evaluations over HTTP keep-alive (wrk, 50 connections,
# random targeting key) side by side with RESP FLAG.EVAL of the same flag
# (redis-benchmark -c 50 -P 1), alternating A B A B, with p50/p99 latency.
# Usage: benches/http.sh [seconds]
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
build_release
FP=$(free_port); HP=$(free_port)
start_flagstaff "$FP" "$WORK/fs" --http-port "$HP"
redis-cli -p "$FP" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
http_run() { # -> "rps p50 p99"
    local out
    out=$(wrk -t2 -c50 -d"${SECS}s" --latency -s "$ROOT/benches/ofrep.lua" "http://127.0.0.1:$HP")
    if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers: $out" >&2; exit 1; fi
    local rps p50 p99
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    echo "$rps $p50 $p99"
}
resp_run() { # -> "rps p50 p99" (ms)
    local n out
    n=$((SECS * 60000))
    out=$(redis-benchmark -p "$FP" -c 50 -P 1 -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX" 2>/dev/null | tr '\r' '\n')
    local rps lat
    rps=$(echo "$out" | grep -Eo '[0-9.]+ requests per second' | tail -1 | awk '{printf "%d", $1}')
    lat=$(echo "$out" | grep -A2 'latency summary' | tail -1)
    echo "$rps $(echo "$lat" | awk '{print $3"ms", $5"ms"}')"
}
printf '%-22s %10s %9s %9s\n' run evals/s p50 p99
for round in 1 2; do
    read -r r a b <<<"$(http_run)"; printf '%-22s %10s %9s %9s\n' "OFREP HTTP #$round" "$r" "$a" "$b"
    read -r r a b <<<"$(resp_run)"; printf '%-22s %10s %9s %9s\n' "RESP FLAG.EVAL #$round" "$r" "$a" "$b"
done
