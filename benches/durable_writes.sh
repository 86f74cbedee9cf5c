#!/usr/bin/env bash
# Durable write throughput: flagstaff FLAG.SET (fsync always, group commit)
# vs redis-server SET with appendonly yes + appendfsync always, 1/10/50
# clients, alternating A B A B. Usage: benches/durable_writes.sh [requests]
source "$(dirname "$0")/lib.sh"
N=${1:-20000}
build_release
FP=$(free_port); RP=$(free_port)
start_flagstaff "$FP" "$WORK/fs"
start_redis "$RP" --appendonly yes --appendfsync always
DEF='{"on":true,"variations":[{"name":"off","value":false},{"name":"on","value":true}],"off_variation":"off","fallthrough":{"variation":"on"}}'
printf '%-8s %14s %14s %7s\n' clients flagstaff redis ratio
for c in 1 10 50; do
    n=$N; [ "$c" = 1 ] && n=$((N / 4))
    f1=$(rps -p "$FP" -c "$c" -n "$n" -r 1000 FLAG.SET 'bench:__rand_int__' "$DEF")
    r1=$(rps -p "$RP" -c "$c" -n "$n" -r 1000 SET 'bench:__rand_int__' "$DEF")
    f2=$(rps -p "$FP" -c "$c" -n "$n" -r 1000 FLAG.SET 'bench:__rand_int__' "$DEF")
    r2=$(rps -p "$RP" -c "$c" -n "$n" -r 1000 SET 'bench:__rand_int__' "$DEF")
    f=$(python3 -c "print(round(($f1+$f2)/2))"); r=$(python3 -c "print(round(($r1+$r2)/2))")
    printf '%-8s %14s %14s %7s\n' "$c" "$f" "$r" "$(python3 -c "print(f'{$f/$r:.2f}x')")"
done
