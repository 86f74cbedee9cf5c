#!/usr/bin/env bash
# A bounded fault loop against a local 3-voter + 1-learner cluster under a
# write load that records every request and reply; then checks the history.
#
#   cluster/chaos.sh [FAULTS]         (default 50)
#
# Faults, chosen at random: kill -9 a random node and restart it; SIGSTOP the
# leader past the election timeout, then SIGCONT; SIGTERM a random node and
# restart it. After the loop every node must hold every acknowledged write,
# per-key versions must only grow, no version may hold two values, and every
# node's `flagstaff export` must be identical. Exits non-zero otherwise.
#
#   FLAGSTAFF_CLUSTER_DIR  where the cluster and the history go [./cluster-chaos]
#   FLAGSTAFF_BASE_PORT    client port of node 1                [7101]
#   CHAOS_SEED             random seed                          [the PID]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FAULTS=${1:-50}
export FLAGSTAFF_CLUSTER_DIR=${FLAGSTAFF_CLUSTER_DIR:-$ROOT/cluster-chaos}
export FLAGSTAFF_BASE_PORT=${FLAGSTAFF_BASE_PORT:-7101}
export FLAGSTAFF_NODES=3 FLAGSTAFF_LEARNERS=1
# Keep every version in the audit log so the check can see every write.
export FLAGSTAFF_EXTRA_ARGS="--audit-retention 1000000 --log-level warn"
export FLAGSTAFF_BIN=${FLAGSTAFF_BIN:-$ROOT/target/release/flagstaff}
RANDOM=${CHAOS_SEED:-$$}
LOCAL="$ROOT/cluster/local.sh"
DIR=$FLAGSTAFF_CLUSTER_DIR
TOTAL=4

(cd "$ROOT" && cargo build --release --quiet --bin flagstaff --example chaos)
CHAOS=$ROOT/target/release/examples/chaos

"$LOCAL" stop >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"
cleanup() { "$LOCAL" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$LOCAL" start
NODES=$(for n in $(seq 1 $TOTAL); do printf '127.0.0.1:%s,' $((FLAGSTAFF_BASE_PORT + n - 1)); done)
NODES=${NODES%,}
rm -f "$DIR/stop"
"$CHAOS" load --nodes "$NODES" --history "$DIR/history.jsonl" --stop "$DIR/stop" &
LOAD=$!
started=$(date +%s)

pid() { cat "$DIR/n$1.pid"; }
for i in $(seq 1 "$FAULTS"); do
  sleep "0.$((RANDOM % 5 + 3))"
  case $((RANDOM % 3)) in
    0)
      n=$((RANDOM % TOTAL + 1))
      echo "fault $i/$FAULTS: kill -9 node $n"
      "$LOCAL" kill "$n"
      sleep "1.$((RANDOM % 10))"
      "$LOCAL" restart "$n"
      ;;
    1)
      if n=$("$LOCAL" leader); then
        echo "fault $i/$FAULTS: SIGSTOP leader $n for 1.5 s"
        kill -STOP "$(pid "$n")"
        sleep 1.5
        kill -CONT "$(pid "$n")"
      else
        echo "fault $i/$FAULTS: no leader right now; skipped"
      fi
      ;;
    2)
      n=$((RANDOM % TOTAL + 1))
      echo "fault $i/$FAULTS: restart node $n (SIGTERM)"
      "$LOCAL" stop-node "$n"
      "$LOCAL" restart "$n"
      ;;
  esac
done

touch "$DIR/stop"
wait "$LOAD"
echo "faults done in $(( $(date +%s) - started )) s; waiting for every node to converge"
for n in $(seq 1 $TOTAL); do
  "$LOCAL" up "$n"
done
"$LOCAL" status
for n in $(seq 1 $TOTAL); do
  for _ in $(seq 1 100); do
    if "$LOCAL" cmd "$n" RAFT.BARRIER | grep -qE '^:?[0-9]+$'; then break; fi
    sleep 0.1
  done
done

status=0
for n in $(seq 1 $TOTAL); do
  "$FLAGSTAFF_BIN" export --addr "127.0.0.1:$((FLAGSTAFF_BASE_PORT + n - 1))" >"$DIR/export-$n.json"
done
for n in $(seq 2 $TOTAL); do
  if ! cmp -s "$DIR/export-1.json" "$DIR/export-$n.json"; then
    echo "VIOLATION node $n's export differs from node 1's"
    status=1
  fi
done
[[ $status == 0 ]] && echo "exports: all $TOTAL nodes identical ($(wc -c <"$DIR/export-1.json") bytes)"
"$CHAOS" check --nodes "$NODES" --history "$DIR/history.jsonl" || status=1
if [[ $status == 0 ]]; then echo "chaos: PASS ($FAULTS faults)"; else echo "chaos: FAIL"; fi
exit $status
