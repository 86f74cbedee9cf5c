#!/usr/bin/env bash
# Event ingestion: FLAG.TRACK on one node with a running experiment that
# reads the event (so every call updates a unit and appends to
# flagstaff:events), redis-benchmark -c 50 -P 16 over 100,000 random users,
# median of the rounds. Prints FLAG.TRACK/s last; the goal is >= 100,000.
# Usage: benches/track.sh [requests] [rounds]
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
ROUNDS=${2:-3}
build_release
P=$(free_port)
# A stream long enough to hold a round, as a deployment at this rate would set.
start_flagstaff "$P" "$WORK/track" --events-max-len 2000000
ROLLOUT='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"rollout":[{"variation":"off","weight":5000},{"variation":"on","weight":5000}]}}'
redis-cli -p "$P" FLAG.SET prod:checkout "$ROLLOUT" >/dev/null
redis-cli -p "$P" EXPERIMENT.SET prod:exp '{"flag":"prod:checkout","control":"off","metrics":[{"name":"purchase","kind":"binary","event":"purchase"},{"name":"revenue","kind":"continuous","event":"purchase"}]}' >/dev/null
redis-cli -p "$P" EXPERIMENT.START prod:exp >/dev/null
# Expose the users first, so tracks land in their metrics.
redis-benchmark -q -p "$P" -c 50 -P 16 -n 200000 -r 100000 FLAG.EVAL prod:checkout '{"key":"user-__rand_int__"}' >/dev/null 2>&1
runs=()
for _ in $(seq 1 "$ROUNDS"); do
    runs+=("$(rps -p "$P" -c 50 -P 16 -n "$N" -r 100000 FLAG.TRACK purchase '{"key":"user-__rand_int__"}' VALUE 9.99)")
done
echo "XLEN flagstaff:events: $(redis-cli -p "$P" XLEN flagstaff:events); runs: ${runs[*]}"
echo "FLAG.TRACK/s (-c 50 -P 16, median of $ROUNDS): $(median "${runs[@]}")"
