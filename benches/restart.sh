#!/usr/bin/env bash
# Restart-to-ready with 100,000 flags, RSS at 100,000 flags, and disk used
# after 1,000,000 updates to 1,000 flags with compaction on.
# Usage: benches/restart.sh [flags] [updates]
source "$(dirname "$0")/lib.sh"
FLAGS=${1:-100000}
UPDATES=${2:-1000000}
build_release
P=$(free_port)
DIR="$WORK/restart"
start_flagstaff "$P" "$DIR"
python3 - "$FLAGS" "$WORK/dump.json" <<'PY'
import json, sys
n = int(sys.argv[1])
flags = {}
for i in range(n):
    flags["prod:flag-%06d" % i] = {
        "on": True,
        "variations": [{"name": "off", "value": False}, {"name": "on", "value": True}],
        "off_variation": "off",
        "rules": [{"id": "eu", "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}],
                   "serve": {"rollout": [{"variation": "on", "weight": 5000}, {"variation": "off", "weight": 5000}]}}],
        "fallthrough": {"variation": "off"},
    }
json.dump({"flags": flags}, open(sys.argv[2], "w"))
PY
"$BIN" import --addr "127.0.0.1:$P" "$WORK/dump.json"
pid=${PIDS[-1]}
echo "flags: $(redis-cli -p "$P" DBSIZE)"
echo "RSS with $FLAGS flags: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
redis-cli -p "$P" SHUTDOWN >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true
start=$(date +%s.%N)
"$BIN" --port "$P" --data-dir "$DIR" --log-level warn --http-port 0 &
PIDS+=($!)
wait_pong "$P"
end=$(date +%s.%N)
echo "restart to ready with $FLAGS flags: $(python3 -c "print(f'{$end-$start:.2f} s')")"
echo "RSS after restart: $(( $(awk '/VmRSS/ {print $2}' /proc/${PIDS[-1]}/status) / 1024 )) MiB"
echo "disk with $FLAGS flags: $(du -sm "$DIR" | cut -f1) MiB"

P2=$(free_port)
DIR2="$WORK/updates"
start_flagstaff "$P2" "$DIR2"
DEF='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}'
s=$(date +%s)
redis-benchmark -q -p "$P2" -c 50 -n "$UPDATES" -r 1000 FLAG.SET 'upd:__rand_int__' "$DEF" | tr '\r' '\n' | grep 'requests per second' | tail -1
echo "$UPDATES updates to 1000 flags took $(( $(date +%s) - s )) s"
echo "disk after $UPDATES updates: $(du -sm "$DIR2" | cut -f1) MiB (wal $(du -sm "$DIR2/wal" | cut -f1), state $(du -sm "$DIR2/state" | cut -f1), snapshots $(du -sm "$DIR2/snapshots" 2>/dev/null | cut -f1))"
