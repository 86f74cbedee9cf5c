#!/usr/bin/env bash
# OFREP single-flag evaluations over HTTP keep-alive (wrk, 50 connections,
# random targeting key) side by side with RESP FLAG.EVAL of the same flag
# (redis-benchmark -c 50 -P 1), alternating A B A B, with p50/p99 latency.
# wrk runs WRK_THREADS threads (default 2, the issue's setting; WRK_THREADS=1
# leaves the server more of a 2-core machine's CPU, see docs/benchmarks.md).
# The server's CPU time per OFREP request (user + system, /proc/PID/stat,
# less sensitive to a shared machine than the rate) is printed per round.
# The last line is the OFREP figure: median evaluations/s and p99 of the rounds.
# Usage: benches/http.sh [seconds] [rounds]
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
ROUNDS=${2:-2}
WRK_THREADS=${WRK_THREADS:-2}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
build_release
FP=$(free_port); HP=$(free_port)
start_flagstaff "$FP" "$WORK/fs" --http-port "$HP"
SERVER=${PIDS[-1]}
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
redis-cli -p "$FP" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
http_run() { # -> "rps p50 p99 cpu-us-per-request"
    local out t0 t1
    t0=$(ticks)
    out=$(wrk -t"$WRK_THREADS" -c50 -d"${SECS}s" --latency -s "$ROOT/benches/ofrep.lua" "http://127.0.0.1:$HP")
    t1=$(ticks)
    if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers: $out" >&2; exit 1; fi
    local rps p50 p99 n
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    echo "$rps $p50 $p99 $(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) * 1e6 / max($n, 1), 1))")"
}
to_ms() { # wrk latency (850.00us, 1.20ms, 2.00s) -> milliseconds
    python3 -c 'import re, sys; v, u = re.match(r"([0-9.]+)(us|ms|s)", sys.argv[1]).groups(); print(float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u])' "$1"
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
printf '%-22s %10s %9s %9s %s\n' run evals/s p50 p99 "server CPU µs/request"
HTTP_RPS=(); HTTP_P99=(); RESP_RPS=()
for round in $(seq 1 "$ROUNDS"); do
    read -r r a b c <<<"$(http_run)"; printf '%-22s %10s %9s %9s %s\n' "OFREP HTTP #$round" "$r" "$a" "$b" "$c"
    HTTP_RPS+=("$r"); HTTP_P99+=("$(to_ms "$b")")
    read -r r a b <<<"$(resp_run)"; printf '%-22s %10s %9s %9s\n' "RESP FLAG.EVAL #$round" "$r" "$a" "$b"
    RESP_RPS+=("$r")
done
echo "wrk -t$WRK_THREADS -c50; RESP FLAG.EVAL median $(median "${RESP_RPS[@]}")/s"
echo "OFREP evaluations/s median $(median "${HTTP_RPS[@]}"), p99 median $(python3 -c 'import sys, statistics; print(round(statistics.median(float(x) for x in sys.argv[1:]), 2))' "${HTTP_P99[@]}") ms (goal >= 100000/s, p99 <= 2 ms)"
