#!/usr/bin/env bash
# The fault soak: N seeded scenarios per row against a 3-voter + 1-learner
# cluster in network namespaces (cluster/fault/driver.py), then one line per
# row and a total. Exits non-zero on any violation or harness error.
#
#   cluster/soak.sh N [ROW...]          (default: every row)
#
#   SOAK_SEED      first seed                        [1]
#   SOAK_SECONDS   seconds of faults per scenario    [20]
#   SOAK_DIR       scenario data, logs, histories    [./cluster-soak]
#   FLAGSTAFF_BIN  binary under test [target/debug/flagstaff, built first]
#   SOAK_POWER_BIN the test build for the power-cut, delay and reorder rows, with
#                  the features power-cut, chaos and planted-bugs (no planted bug
#                  is armed unless its variable is set, no chaos unless the driver
#                  writes a node's chaos.json) [target/planted-bugs/debug/flagstaff,
#                  built first]
#
# Output per row, e.g.: row=partition-leader runs=3 ops=4211 faults=3 violations=0
# Needs root, iproute2, nftables and faketime (installed if apt-get is there).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:?usage: cluster/soak.sh N [ROW...]}
shift
ROWS=("$@")
if ((${#ROWS[@]} == 0)); then
  ROWS=(partition-leader partition-minority partition-ring partition-oneway flapping loss
    kill pause pause-leader clock membership lagging quorum-loss notifications power-cut bitflip
    delay reorder)
fi
SEED=${SOAK_SEED:-1}
SECONDS_PER=${SOAK_SECONDS:-20}
DIR=${SOAK_DIR:-$ROOT/cluster-soak}
BIN=${FLAGSTAFF_BIN:-$ROOT/target/debug/flagstaff}
POWER_BIN=${SOAK_POWER_BIN:-$ROOT/target/planted-bugs/debug/flagstaff}

need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
[[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]] || need+=(faketime)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ -z ${FLAGSTAFF_BIN:-} ]]; then (cd "$ROOT" && cargo build --quiet --bin flagstaff); fi
test_build=" power-cut delay reorder "
needs_test_build=0
for row in "${ROWS[@]}"; do [[ $test_build == *" $row "* ]] && needs_test_build=1; done
if ((needs_test_build)) && [[ -z ${SOAK_POWER_BIN:-} ]]; then
  (cd "$ROOT" && CARGO_TARGET_DIR=target/planted-bugs cargo build --quiet --features planted-bugs,power-cut,chaos --bin flagstaff)
fi

# Namespaces left by a driver that was itself killed -9 (its own exit path removes them).
cleanup() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^fz[0-9]+(h|n[0-9]+)$' || true); do
    pid=${ns#fz}; pid=${pid%h}; pid=${pid%n*}
    if ! kill -0 "$pid" 2>/dev/null; then
      # Nodes die with their driver (PR_SET_PDEATHSIG); stop any left anyway.
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}
cleanup
trap cleanup EXIT
mkdir -p "$DIR"

total_runs=0 total_violations=0 total_errors=0
for row in "${ROWS[@]}"; do
  runs=0 ops=0 faults=0 violations=0
  bin=$BIN
  [[ $test_build == *" $row "* ]] && bin=$POWER_BIN
  for i in $(seq 1 "$N"); do
    seed=$((SEED + i - 1))
    out="$DIR/$row-$seed"
    rm -rf "$out"
    mkdir -p "$out"
    # A scenario is bounded: its faults, then up to a few minutes of convergence and checks.
    line=$(timeout -s INT -k 20 $((SECONDS_PER + 240)) python3 "$ROOT/cluster/fault/driver.py" \
      --row "$row" --seed "$seed" --bin "$bin" --dir "$out" --seconds "$SECONDS_PER" \
      2>"$out/driver.log" | tail -1) || true
    echo "$line" >"$out/result.json"
    read -r o f v e < <(python3 -c '
import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    r = {"error": "no result"}
print(r.get("ops", 0), r.get("faults", 0), r.get("violations", 0), 1 if "error" in r else 0)
' "$line")
    runs=$((runs + 1)) ops=$((ops + o)) faults=$((faults + f)) violations=$((violations + v))
    if ((e)); then
      total_errors=$((total_errors + 1))
      echo "# $row seed $seed: harness error, see $out/driver.log and $out/result.json" >&2
    elif ((v)); then
      echo "# $row seed $seed: $v violations, see $out/result.json" >&2
    fi
  done
  echo "row=$row runs=$runs ops=$ops faults=$faults violations=$violations"
  total_runs=$((total_runs + runs)) total_violations=$((total_violations + violations))
done
echo "total runs=$total_runs violations=$total_violations"
if ((total_violations > 0 || total_errors > 0)); then exit 1; fi
