#!/usr/bin/env bash
# PING latency (p50/p99/max) of a well-behaved client while hostile clients
# run, one scenario at a time, against a release build on loopback.
# Usage: benches/hostile_latency.sh [seconds-per-scenario]
source "$(dirname "$0")/lib.sh"
SECS=${1:-5}
build_release
(cd "$ROOT" && cargo build --release -q --example hostile_latency)
P=$(free_port)
start_flagstaff "$P" "$WORK/hostile" --maxclients 10000
# Keys for the glob scenario to walk, and the flag the deep contexts target.
python3 - "$WORK/dump.json" <<'PY'
import json, sys
flag = {"on": True, "variations": [{"name": "a", "value": 1}], "off_variation": "a",
        "fallthrough": {"variation": "a"}}
flags = {"hostile:" + "a" * 200 + "%05d" % i: flag for i in range(1000)}
flags["hostile:f"] = flag
json.dump({"flags": flags}, open(sys.argv[1], "w"))
PY
"$BIN" import --addr "127.0.0.1:$P" "$WORK/dump.json" >/dev/null
"$ROOT/target/release/examples/hostile_latency" "$P" "$SECS"
echo "server still answering: $(redis-cli -p "$P" ping)"
