#!/usr/bin/env bash
# Memory, import, restart and disk with 100,000 flags (issue 13 rows), and
# disk used after 1,000,000 updates to 1,000 flags with compaction on.
# Usage: benches/restart.sh [flags] [updates]   (updates 0 skips that part)
# Last line: the per-flag and ratio figures against the issue's goals.
source "$(dirname "$0")/lib.sh"
FLAGS=${1:-100000}
UPDATES=${2:-1000000}
build_release
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
used_bytes() { redis-cli -p "$1" INFO memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}'; }
P=$(free_port)
DIR="$WORK/restart"
start_flagstaff "$P" "$DIR"
pid=${PIDS[-1]}
empty_rss=$(rss_kib "$pid")
empty_used=$(used_bytes "$P")
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
echo "import file: $(( $(stat -c %s "$WORK/dump.json") / 1024 / 1024 )) MiB"
"$BIN" import --addr "127.0.0.1:$P" "$WORK/dump.json"
import_rss=$(rss_kib "$pid")
echo "flags: $(redis-cli -p "$P" DBSIZE)"
echo "RSS right after the import: $(( import_rss / 1024 )) MiB"
sleep 5
steady_rss=$(rss_kib "$pid")
steady_used=$(used_bytes "$P")
echo "RSS 5 s later: $(( steady_rss / 1024 )) MiB (empty server: $(( empty_rss / 1024 )) MiB)"
dump_bytes=$(redis-cli -p "$P" FLAG.DUMP | wc -c)
echo "FLAG.DUMP: $(( dump_bytes / 1024 / 1024 )) MiB"
redis-cli -p "$P" SHUTDOWN >/dev/null 2>&1 || true
wait "$pid" 2>/dev/null || true
disk_kib=$(du -sk "$DIR" | cut -f1)
echo "disk with $FLAGS flags: $(( disk_kib / 1024 )) MiB ($(cd "$DIR" && du -sm -- * | tr '\t' '=' | tr '\n' ' '))"
start=$(date +%s.%N)
"$BIN" --port "$P" --data-dir "$DIR" --log-level warn --http-port 0 &
PIDS+=($!)
wait_pong "$P"
end=$(date +%s.%N)
restart=$(python3 -c "print(f'{$end-$start:.2f}')")
echo "restart to ready with $FLAGS flags: $restart s"
sleep 1
restart_rss=$(rss_kib "${PIDS[-1]}")
restart_used=$(used_bytes "$P")
echo "RSS after restart: $(( restart_rss / 1024 )) MiB; heap in use: $(( restart_used / 1024 / 1024 )) MiB"

if [ "$UPDATES" -gt 0 ]; then
    P2=$(free_port)
    DIR2="$WORK/updates"
    start_flagstaff "$P2" "$DIR2"
    DEF='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}'
    s=$(date +%s)
    redis-benchmark -q -p "$P2" -c 50 -n "$UPDATES" -r 1000 FLAG.SET 'upd:__rand_int__' "$DEF" | tr '\r' '\n' | grep 'requests per second' | tail -1
    echo "$UPDATES updates to 1000 flags took $(( $(date +%s) - s )) s"
    echo "disk after $UPDATES updates: $(du -sm "$DIR2" | cut -f1) MiB (wal $(du -sm "$DIR2/wal" | cut -f1), state $(du -sm "$DIR2/state" | cut -f1), snapshots $(du -sm "$DIR2/snapshots" 2>/dev/null | cut -f1))"
fi
python3 - "$FLAGS" "$empty_rss" "$steady_rss" "$restart_rss" "$import_rss" "$empty_used" "$restart_used" "$restart" "$disk_kib" "$dump_bytes" <<'PY'
import sys
n, empty, steady, restart_rss, imp, empty_used, steady_used = map(int, sys.argv[1:8])
restart, disk_kib, dump = float(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
# Steady state = the restarted server holding the same flags: right after an
# import sled is still writing it out (RSS 5 s later is printed above).
print(f"RSS/flag {(restart_rss - empty) / n:.2f} KB (heap {(steady_used - empty_used) / n / 1024:.2f}; goal <= 2)"
      f" | import peak {imp / restart_rss:.2f}x steady (goal <= 1.5)"
      f" | restart {restart:.2f} s (goal <= 0.5)"
      f" | disk {disk_kib * 1024 / dump:.1f}x dump (goal <= 3)")
PY
