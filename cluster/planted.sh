#!/usr/bin/env bash
# Proves the fault harness catches every planted bug: for each, runs its row
# of cluster/fault/driver.py against a test build (features planted-bugs and
# power-cut, target/planted-bugs) with the bug's variable set, until a run
# reports a violation; fails if one is not caught within MAX runs.
#
#   cluster/planted.sh [MAX] [BUG...]     (MAX default 10; BUG: the names below)
#
#   PLANTED_SEED   first seed [1]    SOAK_SECONDS  seconds of faults per run [20]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAX=${1:-10}
shift || true
declare -A ROW=(
  [FLAGSTAFF_UNSAFE_ACK_BEFORE_LOG]=kill
  [FLAGSTAFF_PLANTED_ACK_BEFORE_FSYNC]=power-cut
  [FLAGSTAFF_PLANTED_BARRIER_WITHOUT_READ_INDEX]=partition-leader
  [FLAGSTAFF_PLANTED_ACK_BEFORE_COMMIT]=partition-leader
  [FLAGSTAFF_PLANTED_DROP_CHANGE_EVENT]=notifications
  [FLAGSTAFF_PLANTED_SKIP_WAL_CHECKSUM]=bitflip
)
BUGS=("$@")
if ((${#BUGS[@]} == 0)); then
  BUGS=(FLAGSTAFF_UNSAFE_ACK_BEFORE_LOG FLAGSTAFF_PLANTED_ACK_BEFORE_FSYNC
    FLAGSTAFF_PLANTED_BARRIER_WITHOUT_READ_INDEX FLAGSTAFF_PLANTED_ACK_BEFORE_COMMIT
    FLAGSTAFF_PLANTED_DROP_CHANGE_EVENT FLAGSTAFF_PLANTED_SKIP_WAL_CHECKSUM)
fi
SEED=${PLANTED_SEED:-1}
SECONDS_PER=${SOAK_SECONDS:-20}
DIR=${SOAK_DIR:-$ROOT/cluster-soak}/planted
BIN=$ROOT/target/planted-bugs/debug/flagstaff
(cd "$ROOT" && CARGO_TARGET_DIR=target/planted-bugs cargo build --quiet --features planted-bugs,power-cut,chaos --bin flagstaff)
mkdir -p "$DIR"
status=0
for bug in "${BUGS[@]}"; do
  row=${ROW[$bug]:?unknown planted bug $bug}
  caught=0
  for i in $(seq 1 "$MAX"); do
    seed=$((SEED + i - 1))
    out="$DIR/$bug-$seed"
    rm -rf "$out"
    mkdir -p "$out"
    line=$(env "$bug=1" timeout -s INT -k 20 $((SECONDS_PER + 240)) python3 "$ROOT/cluster/fault/driver.py" \
      --row "$row" --seed "$seed" --bin "$BIN" --dir "$out" --seconds "$SECONDS_PER" \
      2>"$out/driver.log" | tail -1) || true
    echo "$line" >"$out/result.json"
    v=$(python3 -c 'import json,sys
try: print(json.loads(sys.argv[1]).get("violations", 0))
except ValueError: print(0)' "$line")
    if ((v > 0)); then
      caught=$i
      break
    fi
  done
  if ((caught)); then
    echo "planted=$bug row=$row caught_after=$caught runs (see $DIR/$bug-$((SEED + caught - 1))/result.json)"
  else
    echo "planted=$bug row=$row NOT CAUGHT in $MAX runs"
    status=1
  fi
done
exit $status
