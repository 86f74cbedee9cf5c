#!/usr/bin/env bash
# FLAG.EVAL over TLS vs plaintext on one server (its --port and --tls-port),
# redis-benchmark -c 50 -P 16 -r 100000, alternating A B A B A B; prints the
# medians and, on its last line, the TLS/plaintext ratio.
# Usage: benches/tls.sh [requests]
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
build_release
(cd "$ROOT" && cargo run -q --example test_certs -- "$WORK/certs" >/dev/null)
C="$WORK/certs"
PORT=$(free_port); TLS_PORT=$(free_port)
# Client certificates off: this measures the encryption, not redis-benchmark's cert handling.
start_flagstaff "$PORT" "$WORK/fs" --tls-port "$TLS_PORT" --tls-cert-file "$C/server.pem" \
    --tls-key-file "$C/server.key" --tls-ca-cert-file "$C/ca.pem" --tls-auth-clients no
redis-cli -p "$PORT" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
plain=(); tls=()
for round in 1 2 3; do
    plain+=("$(rps -p "$PORT" -c 50 -P 16 -n "$N" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
    tls+=("$(rps -p "$TLS_PORT" --tls --cacert "$C/ca.pem" -c 50 -P 16 -n "$N" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
    echo "round $round: plaintext ${plain[-1]} req/s, TLS ${tls[-1]} req/s"
done
p=$(median "${plain[@]}"); t=$(median "${tls[@]}")
echo "median: plaintext $p req/s, TLS $t req/s"
python3 -c "print(f'TLS/plaintext ratio: {$t/$p:.2f}')"
