# Helpers shared by the benchmark scripts: start/stop servers on free ports.
# Source it; every server started here is stopped on exit.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# FLAGSTAFF_BIN=path runs a given binary (an A/B against another build) and skips the build.
BIN="${FLAGSTAFF_BIN:-$ROOT/target/release/flagstaff}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/flagstaff-bench-XXXXXX")"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_pong() { # port
    for _ in $(seq 1 600); do
        if [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    echo "server on $1 did not start" >&2; return 1
}

build_release() { [ -n "${FLAGSTAFF_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q); }

start_flagstaff() { # port datadir [args...]
    local port=$1 dir=$2; shift 2
    # HTTP off unless the caller gives --http-port: bench servers must not race for port + 1000.
    local http=(--http-port 0)
    if [[ " $* " == *" --http-port "* ]]; then http=(); fi
    "$BIN" --port "$port" --data-dir "$dir" --log-level warn "${http[@]}" "$@" &
    PIDS+=($!)
    wait_pong "$port"
}

start_redis() { # port [args...]
    local port=$1; shift
    redis-server --port "$port" --save '' --dir "$WORK" --daemonize no "$@" >/dev/null &
    PIDS+=($!)
    wait_pong "$port"
}

rps() { # redis-benchmark args... -> requests per second (number only)
    redis-benchmark -q "$@" 2>/dev/null | tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | awk '{print $1}'
}

# The flag every evaluation benchmark measures: 3 rules (an `in`, an `eq`, a
# 50/50 rollout) and a context that falls through all of them but the last.
BENCH_FLAG='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off",
 "rules":[{"id":"eu","clauses":[{"attribute":"country","op":"in","values":["DE","FR","NL"]}],"serve":{"variation":"on"}},
          {"id":"pro","clauses":[{"attribute":"plan","op":"eq","values":["pro"]}],"serve":{"variation":"on"}},
          {"id":"half","clauses":[{"attribute":"beta","op":"eq","values":[true]}],
           "serve":{"rollout":[{"variation":"on","weight":5000},{"variation":"off","weight":5000}]}}],
 "fallthrough":{"variation":"off"}}'
BENCH_CTX='{"key":"user-__rand_int__","country":"US","plan":"free","beta":true}'

# The median of the numbers given, rounded.
median() { python3 -c 'import sys, statistics; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }
