#!/usr/bin/env bash
# CPU (user + system, all threads) a server spends until it first answers
# PING on a copy of a stopped server's data dir, and its RSS and heap in use
# 1 s later: a restart figure that survives a loaded machine (issue 13).
# Usage: benches/restart_cpu.sh <data-dir> [binary]   (alternate two binaries for an A/B)
source "$(dirname "$0")/lib.sh"
SRC=$1
BIN=${2:-$BIN}
[ -n "${2:-}" ] || build_release
cp -a "$SRC" "$WORK/data"
P=$(free_port)
start=$(date +%s.%N)
"$BIN" --port "$P" --data-dir "$WORK/data" --log-level warn --http-port 0 &
pid=$!
PIDS+=($pid)
until [ "$(redis-cli -p "$P" ping 2>/dev/null)" = PONG ]; do sleep 0.01; done
end=$(date +%s.%N)
read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
sleep 1
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
used=$(redis-cli -p "$P" INFO memory | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}')
python3 -c "print(f'ready {$end-$start:.2f} s | CPU at ready {($ut+$st)/100:.2f} s (user {$ut/100:.2f}) | RSS {$rss/1024:.0f} MiB | used_memory {$used/1048576:.0f} MiB | load $(cut -d' ' -f1 /proc/loadavg)')"
