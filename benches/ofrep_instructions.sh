#!/usr/bin/env bash
# Instructions the server executes per OFREP single-flag evaluation
# (callgrind, load-independent): the server runs under valgrind, a
# keep-alive client sends N warm-up then N counted requests (random
# targeting key, the body of benches/ofrep.lua), and the counted window's
# instructions are divided by N. Needs valgrind (callgrind_control).
# With OFREP_PASSWORD=pw the server runs with --requirepass pw and every
# request carries `Authorization: Bearer default:pw` (the password path:
# credential check and login backoff on every request).
# Usage: [OFREP_PASSWORD=pw] benches/ofrep_instructions.sh [requests]
source "$(dirname "$0")/lib.sh"
N=${1:-2000}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
build_release
FP=$(free_port); HP=$(free_port)
OUT="$WORK/callgrind.out"
PASSWORD=${OFREP_PASSWORD:-}
AUTH=()
if [ -n "$PASSWORD" ]; then
    AUTH=(--requirepass "$PASSWORD")
    export REDISCLI_AUTH="$PASSWORD"
fi
valgrind --tool=callgrind --callgrind-out-file="$OUT" --instr-atstart=no \
    "$BIN" --port "$FP" --data-dir "$WORK/fs" --http-port "$HP" --log-level warn "${AUTH[@]}" 2>"$WORK/valgrind.log" &
PIDS+=($!)
VG=$!
wait_pong "$FP"
redis-cli -p "$FP" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
client() { # count
    python3 - "$HP" "$1" "$PASSWORD" <<'PY'
import http.client, random, sys
port, n, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
random.seed(1)
c = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Content-Type": "application/json"}
if password:
    headers["Authorization"] = "Bearer default:" + password
for _ in range(n):
    body = '{"context":{"targetingKey":"user-%d","country":"US","plan":"free","beta":true}}' % random.randint(1, 100000)
    c.request("POST", "/ofrep/v1/evaluate/flags/prod:checkout", body, headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit("status %d" % r.status)
PY
}
client "$N"
callgrind_control -i on "$VG" >/dev/null 2>&1
client "$N"
callgrind_control -d "$VG" >/dev/null 2>&1
callgrind_control -i off "$VG" >/dev/null 2>&1
sleep 1
TOTAL=$(cat "$OUT"* | awk '/^summary:/ {s += $2} END {print s}')
cp "$OUT"* "${TMPDIR:-/tmp}/" 2>/dev/null || true
echo "requests $N${PASSWORD:+ (with a password)}, instructions $TOTAL (profiles copied to ${TMPDIR:-/tmp}/$(basename "$OUT")*)"
echo "instructions per OFREP evaluation: $((TOTAL / N))"
