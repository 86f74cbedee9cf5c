#!/usr/bin/env bash
# FLAG.EVAL of a 3-rule flag with a 50/50 rollout and a small JSON context
# vs Redis GET of existing keys, redis-benchmark -c 50 -r 100000, at -P 16
# and -P 1, alternating A B A B; with each server's CPU (utime + stime from
# /proc/<pid>/stat) per request. Usage: benches/compare.sh [requests]
# (FLAGSTAFF_BIN=<binary> measures another build).
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
FPID=${PIDS[0]}; RPID=${PIDS[1]}
# utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15).
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
# Runs redis-benchmark against one server: its requests per second go in the
# variable named by $3, the server's CPU ticks meanwhile are added to $2's.
measured() { # pid cpu-var rps-var redis-benchmark-args...
    local pid=$1 cv=$2 rv=$3; shift 3
    local before after
    before=$(cpu_ticks "$pid")
    printf -v "$rv" '%s' "$(rps "$@")"
    after=$(cpu_ticks "$pid")
    printf -v "$cv" '%s' $((${!cv} + after - before))
}
printf '%-6s %14s %14s %7s %16s\n' pipe flag.eval redis-get ratio cpu/req-ratio
summary=()
for p in 16 1; do
    n=$N; [ "$p" = 1 ] && n=$((N / 4))
    fcpu=0; rcpu=0
    measured "$FPID" fcpu f1 -p "$FP" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX"
    measured "$RPID" rcpu r1 -p "$RP" -c 50 -P "$p" -n "$n" -r 100000 GET 'key:__rand_int__'
    measured "$FPID" fcpu f2 -p "$FP" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX"
    measured "$RPID" rcpu r2 -p "$RP" -c 50 -P "$p" -n "$n" -r 100000 GET 'key:__rand_int__'
    f=$(python3 -c "print(round(($f1+$f2)/2))"); r=$(python3 -c "print(round(($r1+$r2)/2))")
    ratio=$(python3 -c "print(f'{$f/$r:.2f}x')")
    # Both servers answered the same number of requests: CPU per request
    # compares as total CPU (ticks of 1/100 s: needs ~1 s of CPU per server).
    cpu=$(python3 -c "print(f'{$fcpu/$rcpu:.2f}x' if $rcpu else 'n/a')")
    printf '%-6s %14s %14s %7s %16s\n' "-P $p" "$f" "$r" "$ratio" "$cpu ($fcpu/$rcpu ticks)"
    summary+=("-P $p: $ratio Redis GET, CPU per request $cpu Redis's")
done
echo "FLAG.EVAL vs GET ${summary[0]}; ${summary[1]}"
