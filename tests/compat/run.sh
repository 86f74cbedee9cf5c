#!/usr/bin/env bash
# Compatibility suite: real client libraries and tools against the real
# server, with their default settings. Installs what it needs itself.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${TMPDIR:-/tmp}/flagstaff-compat-$$"
mkdir -p "$work"

log() { printf '== %s\n' "$*"; }

GECKODRIVER_VERSION=0.37.1

install_tools() {
    if ! command -v redis-cli >/dev/null || ! command -v redis-benchmark >/dev/null; then
        log "installing redis-tools"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null
    fi
    if [ ! -x "$root/.venv-compat/bin/python" ]; then
        log "creating python venv"
        python3 -m venv "$root/.venv-compat"
    fi
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        # Debian's browser and driver: Playwright/selenium browser downloads do not work here.
        log "installing chromium and chromium-driver"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    if ! command -v firefox-esr >/dev/null; then
        log "installing firefox-esr"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firefox-esr >/dev/null
    fi
    # Debian has no geckodriver package; it is a Rust crate (Mozilla's own).
    if [ ! -x "$root/.compat-tools/bin/geckodriver" ]; then
        log "building geckodriver $GECKODRIVER_VERSION with cargo install (a few minutes)"
        cargo install -q --locked geckodriver --version "$GECKODRIVER_VERSION" --root "$root/.compat-tools"
    fi
    "$root/.venv-compat/bin/pip" install -q 'redis>=8,<9' 'openfeature-sdk>=0.10,<0.11' 'openfeature-provider-ofrep>=0.3,<0.4' 'selenium>=4.20,<5' \
        'numpy==2.4.6' 'scipy==1.17.1' 'statsmodels==0.15.0'
    log "installing node clients"
    (cd "$here" && npm install --no-audit --no-fund --silent >/dev/null)
}

free_port() {
    "$root/.venv-compat/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_pong() { # port [password]
    for _ in $(seq 1 100); do
        if redis-cli -p "$1" ${2:+-a "$2" --no-auth-warning} ping 2>/dev/null | grep -q PONG; then return; fi
        sleep 0.1
    done
    echo "server on $1 did not start" >&2
    exit 1
}

start_server() {
    (cd "$root" && cargo build -q)
    port=$(free_port)
    http_port=$(free_port)
    "$root/target/debug/flagstaff" --port "$port" --http-port "$http_port" --data-dir "$work/data" --log-level warn &
    server_pid=$!
    # A second server with a password and a rate limit, for the OFREP auth and 429 checks.
    limited_port=$(free_port)
    limited_http=$(free_port)
    "$root/target/debug/flagstaff" --port "$limited_port" --http-port "$limited_http" --data-dir "$work/limited" \
        --log-level warn --requirepass compat-pw --http-rate-limit 2 &
    limited_pid=$!
    trap 'kill "$server_pid" "$limited_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
    wait_pong "$port"
    wait_pong "$limited_port" compat-pw
}

expect() { # expect <want> <cmd...>: run, compare output
    local want="$1"; shift
    local got
    got="$("$@")"
    if [ "$got" != "$want" ]; then
        printf 'FAIL: %s\n  want: %q\n  got:  %q\n' "$*" "$want" "$got" >&2
        exit 1
    fi
}

redis_cli_checks() {
    log "redis-cli one-shot"
    expect PONG redis-cli -p "$port" ping
    expect hello redis-cli -p "$port" echo hello
    expect 1 redis-cli -p "$port" FLAG.SET cli:f '{"on":true,"variations":[{"name":"a","value":"A"},{"name":"b","value":"B"}],"off_variation":"a","fallthrough":{"variation":"b"}}'
    expect '"B"' redis-cli -p "$port" FLAG.EVAL cli:f '{"key":"u"}'
    expect 'INVALID fallthrough: required field is missing' redis-cli -p "$port" FLAG.SET cli:g '{"on":true,"variations":[{"name":"a","value":1}],"off_variation":"a"}'
    log "redis-cli --user/--pass as a restricted user"
    expect OK redis-cli -p "$port" ACL SETUSER cliapp on '>clipw' '~cli:*' +@connection +@flag-eval
    expect '"B"' redis-cli -p "$port" --user cliapp --pass clipw --no-auth-warning FLAG.EVAL cli:f '{"key":"u"}'
    expect 'NOPERM No permissions to access a key' redis-cli -p "$port" --user cliapp --pass clipw --no-auth-warning FLAG.EVAL prod:f
    expect "NOPERM User cliapp has no permissions to run the 'flag.del' command" redis-cli -p "$port" --user cliapp --pass clipw --no-auth-warning FLAG.DEL cli:f
    expect 1 redis-cli -p "$port" ACL DELUSER cliapp
    log "redis-cli -3"
    expect '"B"' redis-cli -3 -p "$port" FLAG.EVAL cli:f
    redis-cli -3 -p "$port" FLAG.DETAIL cli:f | grep -q 'FALLTHROUGH'
    redis-cli -3 -p "$port" HELLO 3 | grep -q 'proto'
    log "redis-cli --pipe with 100,000 commands"
    "$root/.venv-compat/bin/python" - "$work/pipe.txt" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(100_000):
        msg = b"m%d" % i
        f.write(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(msg), msg))
PY
    out="$(redis-cli -p "$port" --pipe < "$work/pipe.txt")"
    echo "$out" | grep -q 'errors: 0, replies: 100000' || { echo "pipe failed: $out" >&2; exit 1; }
    log "redis-cli --latency for 2 s"
    lat="$(timeout 2 redis-cli -p "$port" --latency --raw || true)"
    echo "$lat" | grep -Eq '^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+' || { echo "latency output: $lat" >&2; exit 1; }
    log "redis-benchmark -t ping"
    redis-benchmark -p "$port" -t ping -n 20000 -q | tee "$work/bench.txt"
    grep -q 'PING_INLINE' "$work/bench.txt" && grep -q 'PING_MBULK' "$work/bench.txt"
}

tls_checks() { # a TLS-only server; client certificates required (the default with a CA)
    log "TLS: certificates from examples/test_certs.rs"
    (cd "$root" && cargo run -q --example test_certs -- "$work/certs" >/dev/null)
    local c="$work/certs" tls_port
    tls_port=$(free_port)
    "$root/target/debug/flagstaff" --port 0 --tls-port "$tls_port" --http-port 0 --data-dir "$work/tls" \
        --log-level warn --tls-cert-file "$c/server.pem" --tls-key-file "$c/server.key" --tls-ca-cert-file "$c/ca.pem" &
    tls_pid=$!
    trap 'kill "$tls_pid" "$server_pid" "$limited_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
    local cli=(redis-cli -h 127.0.0.1 -p "$tls_port" --tls --cacert "$c/ca.pem")
    for _ in $(seq 1 100); do
        if "${cli[@]}" --cert "$c/client.pem" --key "$c/client.key" ping 2>/dev/null | grep -q PONG; then break; fi
        sleep 0.1
    done
    log "redis-cli --tls --cacert"
    expect PONG "${cli[@]}" --cert "$c/client.pem" --key "$c/client.key" ping
    expect 1 "${cli[@]}" --cert "$c/client.pem" --key "$c/client.key" FLAG.SET cli:tls '{"on":true,"variations":[{"name":"a","value":"A"}],"off_variation":"a","fallthrough":{"variation":"a"}}'
    expect '"A"' "${cli[@]}" --cert "$c/client.pem" --key "$c/client.key" FLAG.EVAL cli:tls
    if "${cli[@]}" ping 2>/dev/null | grep -q PONG; then echo "FAIL: TLS client without a certificate was served" >&2; exit 1; fi
    if "${cli[@]}" --cert "$c/foreign.pem" --key "$c/foreign.key" ping 2>/dev/null | grep -q PONG; then
        echo "FAIL: TLS client with a foreign certificate was served" >&2; exit 1
    fi
    log "redis-py ssl=True"
    "$root/.venv-compat/bin/python" "$here/tls_check.py" "$tls_port" "$c"
    log "ioredis tls: {ca}"
    node "$here/tls_check.js" "$tls_port" "$c"
    kill "$tls_pid" 2>/dev/null || true
    trap 'kill "$server_pid" "$limited_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
}

install_tools
start_server
tls_checks
redis_cli_checks
log "experiment statistics: the scipy/statsmodels fixtures regenerate identically"
"$root/.venv-compat/bin/python" "$root/tests/experiments_fixtures.py" > "$work/experiments.json"
diff -q "$root/tests/fixtures/experiments.json" "$work/experiments.json"
log "redis-py"
"$root/.venv-compat/bin/python" "$here/redis_py_check.py" "$port"
log "experiments: redis-py, 20,000 users, +10 % lift found significant"
"$root/.venv-compat/bin/python" "$here/experiments_check.py" "$port"
log "ioredis"
node "$here/ioredis_check.js" "$port"
log "ioredis as a restricted user"
node "$here/ioredis_acl_check.js" "$port"
log "node-redis"
node "$here/node_redis_check.js" "$port"
log "OpenFeature: Python SDK + OFREP provider"
"$root/.venv-compat/bin/python" "$here/ofrep_check.py" "$port" "$http_port" "$limited_port" "$limited_http"
log "OpenFeature: Node server SDK + OFREP provider"
node "$here/ofrep_check.js" "$port" "$http_port" "$limited_port" "$limited_http"
kill "$limited_pid" 2>/dev/null || true
for browser in chromium firefox; do
    log "admin console: headless $browser driven by selenium (screenshots in tests/compat/screenshots/$browser/)"
    console_port=$(free_port)
    console_http=$(free_port)
    "$root/target/debug/flagstaff" --port "$console_port" --http-port "$console_http" --data-dir "$work/console-$browser" \
        --log-level warn --requirepass console-pw &
    console_pid=$!
    trap 'kill "$server_pid" "$limited_pid" "$console_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
    wait_pong "$console_port" console-pw
    "$root/.venv-compat/bin/python" "$here/console_check.py" "$console_port" "$console_http" console-pw \
        "$browser" "$root/.compat-tools/bin/geckodriver"
    kill "$console_pid" 2>/dev/null || true
done
log "ioredis subscriber"
node "$here/ioredis_subscriber_check.js" "$port"
log "change feed: redis-py pub/sub and examples/local_cache.py across a restart"
"$root/.venv-compat/bin/python" "$here/change_feed_check.py" "$port" "$root/target/debug/flagstaff" "$work/data" "$server_pid"
log "cluster: redis-cli and redis-py on a 3-voter + 1-learner cluster"
cluster_env=(FLAGSTAFF_CLUSTER_DIR="$work/cluster" FLAGSTAFF_BIN="$root/target/debug/flagstaff" FLAGSTAFF_BASE_PORT=7601)
env "${cluster_env[@]}" "$root/cluster/local.sh" start
trap 'env "${cluster_env[@]}" "$root/cluster/local.sh" stop >/dev/null 2>&1 || true; kill "$server_pid" "$limited_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
expect 1 redis-cli -p 7603 FLAG.SET cli:cluster '{"on":true,"variations":[{"name":"a","value":"A"}],"off_variation":"a","fallthrough":{"variation":"a"}}'
"$root/.venv-compat/bin/python" "$here/cluster_check.py" 7601 7602 7603 7604
env "${cluster_env[@]}" "$root/cluster/local.sh" stop
log "compatibility suite passed"
