#!/usr/bin/env bash
# A 3-voter cluster on loopback (cluster/local.sh, default timings):
#  1. durable write throughput at 1/10/50 clients, sent to the leader and to
#     a follower (which forwards to the leader);
#  2. replication lag: FLAG.SET acknowledged by the leader -> change event
#     received by a subscriber on a follower (p50/p99/max);
#  3. failover: kill -9 the leader, time until a write through a surviving
#     node succeeds; KILLS times, p50/p99/max.
# Usage: benches/cluster.sh [requests] [kills]
source "$(dirname "$0")/lib.sh"
N=${1:-20000}
KILLS=${2:-20}
build_release
(cd "$ROOT" && cargo build --release -q --example propagation)
export FLAGSTAFF_CLUSTER_DIR="$WORK/cluster" FLAGSTAFF_BIN="$BIN"
export FLAGSTAFF_NODES=3 FLAGSTAFF_LEARNERS=0 FLAGSTAFF_BASE_PORT=${FLAGSTAFF_BASE_PORT:-7201}
export FLAGSTAFF_EXTRA_ARGS="--log-level warn"
LOCAL="$ROOT/cluster/local.sh"
trap '"$LOCAL" stop >/dev/null 2>&1; cleanup' EXIT
"$LOCAL" start >/dev/null
port() { echo $((FLAGSTAFF_BASE_PORT + $1 - 1)); }
L=$("$LOCAL" leader); F=$((L % 3 + 1))
DEF='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}'

echo "## write throughput, 3 voters (requests/s)"
printf '%-8s %14s %14s\n' clients via-leader via-follower
for c in 1 10 50; do
    n=$N; [ "$c" = 1 ] && n=$((N / 4))
    a=$(rps -p "$(port "$L")" -c "$c" -n "$n" -r 1000 FLAG.SET 'bench:__rand_int__' "$DEF")
    b=$(rps -p "$(port "$F")" -c "$c" -n "$n" -r 1000 FLAG.SET 'bench:__rand_int__' "$DEF")
    printf '%-8s %14s %14s\n' "$c" "$a" "$b"
done

echo "## replication lag: ack on leader node $L -> event on follower node $F"
"$ROOT/target/release/examples/propagation" "$(port "$L")" 10000 "$(port "$F")"

echo "## failover: kill -9 the leader -> first successful write ($KILLS kills)"
times=()
for i in $(seq 1 "$KILLS"); do
    L=$("$LOCAL" leader); O=$((L % 3 + 1))
    kill -9 "$(cat "$FLAGSTAFF_CLUSTER_DIR/n$L.pid")"
    t0=$(date +%s%N)
    for _ in $(seq 1 1000); do
        r=$(redis-cli -p "$(port "$O")" FLAG.SET failover:probe "$DEF" 2>/dev/null || true)
        [[ $r =~ ^[0-9]+$ ]] && break
        sleep 0.005
    done
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    times+=("$ms")
    echo "kill $i: leader $L, write via node $O after $ms ms"
    "$LOCAL" restart "$L" >/dev/null
    sleep 1
done
printf '%s\n' "${times[@]}" | sort -n | python3 -c '
import sys
t = [int(x) for x in sys.stdin]
pct = lambda p: t[min(len(t) - 1, int(round((len(t) - 1) * p)))]
print(f"failover over {len(t)} kills: p50 {pct(0.5)} ms, p99 {pct(0.99)} ms, max {t[-1]} ms")'
