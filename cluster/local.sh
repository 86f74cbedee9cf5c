#!/usr/bin/env bash
# A local cluster on loopback: 3 voters and 1 learner, data and logs under one
# folder. Usage: cluster/local.sh start|stop|status|kill N|restart N|up N|stop-node N|pause N|resume N|leader|addr N|cmd N ARGS..
#
#   FLAGSTAFF_CLUSTER_DIR  data, logs and pid files      [./cluster-data]
#   FLAGSTAFF_BIN          the flagstaff binary           [target/release/flagstaff, built if missing]
#   FLAGSTAFF_BASE_PORT    client port of node 1 (node N: base+N-1; bus: +10000; HTTP: +1000) [7001]
#   FLAGSTAFF_NODES        voters                         [3]
#   FLAGSTAFF_LEARNERS     learners after the voters      [1]
#   FLAGSTAFF_EXTRA_ARGS   extra flags for every node     []
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${FLAGSTAFF_CLUSTER_DIR:-$ROOT/cluster-data}
BASE=${FLAGSTAFF_BASE_PORT:-7001}
VOTERS=${FLAGSTAFF_NODES:-3}
LEARNERS=${FLAGSTAFF_LEARNERS:-1}
TOTAL=$((VOTERS + LEARNERS))
BIN=${FLAGSTAFF_BIN:-$ROOT/target/release/flagstaff}

port() { echo $((BASE + $1 - 1)); }
bus_port() { echo $((BASE + $1 - 1 + 10000)); }
http_port() { echo $((BASE + $1 - 1 + 1000)); }
pidfile() { echo "$DIR/n$1.pid"; }
# Running and not a zombie (a killed node may wait a while to be reaped).
alive() {
  [[ -f $(pidfile "$1") ]] || return 1
  local stat
  stat=$(cut -d' ' -f3 "/proc/$(cat "$(pidfile "$1")")/stat" 2>/dev/null) || return 1
  [[ -n $stat && $stat != Z ]]
}

# Sends one command to node N's client port and prints the raw RESP reply.
resp() {
  local n=$1; shift
  if command -v redis-cli >/dev/null; then
    redis-cli -p "$(port "$n")" --no-auth-warning "$@" 2>/dev/null
    return
  fi
  local req="*$#\r\n" a
  for a in "$@"; do req+="\$${#a}\r\n$a\r\n"; done
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$(port "$n"); printf '$req' >&3; timeout 1 cat <&3" 2>/dev/null | tr -d '\r' || true
}

secret() {
  [[ -f $DIR/secret ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret"
  cat "$DIR/secret"
}

wait_ready() {
  local n=$1 i
  for i in $(seq 1 300); do
    if resp "$n" PING | grep -q PONG; then return 0; fi
    if ! alive "$n"; then echo "node $n exited; see $DIR/n$n.log" >&2; return 1; fi
    sleep 0.1
  done
  echo "node $n not ready after 30 s; see $DIR/n$n.log" >&2
  return 1
}

start_node() {
  local n=$1
  if alive "$n"; then echo "node $n already running"; return 0; fi
  local args=(--node-id "$n" --port "$(port "$n")" --cluster-port "$(bus_port "$n")"
    --http-port "$(http_port "$n")"
    --cluster-secret "$(secret)" --data-dir "$DIR/n$n")
  # --join matters only while a node's data dir is empty.
  if ((n > 1)); then args+=(--join "127.0.0.1:$(port 1)"); fi
  if ((n > VOTERS)); then args+=(--learner); fi
  # shellcheck disable=SC2086
  "$BIN" "${args[@]}" ${FLAGSTAFF_EXTRA_ARGS:-} >>"$DIR/n$n.log" 2>&1 &
  echo $! >"$(pidfile "$n")"
}

build() {
  if [[ ! -x $BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet)
  fi
}

status() {
  local n
  for n in $(seq 1 "$TOTAL"); do
    if alive "$n"; then
      local info
      info=$(resp "$n" RAFT.INFO | grep -E '^(role|leader_id|term|applied_index|stale):' | tr '\n' ' ')
      echo "node $n  127.0.0.1:$(port "$n")  pid $(cat "$(pidfile "$n")")  $info"
    else
      echo "node $n  127.0.0.1:$(port "$n")  down"
    fi
  done
}

leader() {
  local n
  for n in $(seq 1 "$TOTAL"); do
    if alive "$n" && resp "$n" RAFT.INFO | grep -q '^role:leader'; then echo "$n"; return 0; fi
  done
  return 1
}

cmd=${1:-}
mkdir -p "$DIR"
case $cmd in
  start)
    build
    start_node 1 && wait_ready 1
    for n in $(seq 2 "$TOTAL"); do start_node "$n"; done
    for n in $(seq 2 "$TOTAL"); do wait_ready "$n"; done
    status
    ;;
  stop)
    for n in $(seq 1 "$TOTAL"); do
      if alive "$n"; then kill -CONT "$(cat "$(pidfile "$n")")" 2>/dev/null || true; kill -TERM "$(cat "$(pidfile "$n")")"; fi
    done
    for n in $(seq 1 "$TOTAL"); do
      for _ in $(seq 1 100); do alive "$n" || break; sleep 0.1; done
      rm -f "$(pidfile "$n")"
    done
    ;;
  status) status ;;
  leader) leader ;;
  addr) echo "127.0.0.1:$(port "${2:?node number}")" ;;
  kill)
    n=${2:?node number}
    alive "$n" && kill -9 "$(cat "$(pidfile "$n")")"
    for _ in $(seq 1 100); do alive "$n" || break; sleep 0.05; done
    ;;
  stop-node)
    n=${2:?node number}
    alive "$n" && kill -TERM "$(cat "$(pidfile "$n")")"
    for _ in $(seq 1 100); do alive "$n" || break; sleep 0.1; done
    ;;
  up)
    n=${2:?node number}
    if alive "$n"; then kill -CONT "$(cat "$(pidfile "$n")")"; else build; start_node "$n" && wait_ready "$n"; fi
    ;;
  cmd)
    n=${2:?node number}; shift 2
    resp "$n" "$@"
    ;;
  pause) kill -STOP "$(cat "$(pidfile "${2:?node number}")")" ;;
  resume) kill -CONT "$(cat "$(pidfile "${2:?node number}")")" ;;
  restart)
    n=${2:?node number}
    if alive "$n"; then kill -9 "$(cat "$(pidfile "$n")")"; sleep 0.2; fi
    build
    start_node "$n" && wait_ready "$n"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
