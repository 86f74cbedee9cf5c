#!/usr/bin/env bash
# Change propagation on one node: FLAG.SET acknowledgement -> subscriber
# receipt, p50/p99/max. Usage: benches/propagation.sh [changes]
source "$(dirname "$0")/lib.sh"
N=${1:-10000}
build_release
(cd "$ROOT" && cargo build --release -q --example propagation)
P=$(free_port)
start_flagstaff "$P" "$WORK/prop"
"$ROOT/target/release/examples/propagation" "$P" "$N"
