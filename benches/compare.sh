#!/usr/bin/env bash
# FLAG.EVAL of a 3-rule flag with a 50/50 rollout and a small JSON context
# vs Redis GET of existing keys, redis-benchmark -c 50 -r 100000, at -P 16
# and -P 1, alternating A B A B. Usage: benches/compare.sh [requests]
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
build_release
FP=$(free_port); RP=$(free_port)
start_flagstaff "$FP" "$WORK/fs"
start_redis "$RP"
redis-cli -p "$FP" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
# Prefill Redis with every key the GETs ask for (misses are cheaper).
python3 - "$RP" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
buf = bytearray()
for i in range(100000):
    k = b"key:%012d" % i
    buf += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n" % (len(k), k)
s.sendall(buf)
got = 0
while got < 100000:
    got += s.recv(1 << 20).count(b"+OK")
PY
printf '%-6s %14s %14s %7s\n' pipe flag.eval redis-get ratio
for p in 16 1; do
    n=$N; [ "$p" = 1 ] && n=$((N / 4))
    f1=$(rps -p "$FP" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")
    r1=$(rps -p "$RP" -c 50 -P "$p" -n "$n" -r 100000 GET 'key:__rand_int__')
    f2=$(rps -p "$FP" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")
    r2=$(rps -p "$RP" -c 50 -P "$p" -n "$n" -r 100000 GET 'key:__rand_int__')
    f=$(python3 -c "print(round(($f1+$f2)/2))"); r=$(python3 -c "print(round(($r1+$r2)/2))")
    printf '%-6s %14s %14s %7s\n' "-P $p" "$f" "$r" "$(python3 -c "print(f'{$f/$r:.2f}x')")"
done
