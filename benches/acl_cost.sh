#!/usr/bin/env bash
# The cost of the ACL check: FLAG.EVAL of the 3-rule flag of compare.sh
# through a restricted user (~prod:* plus two more key patterns, +@flag-eval)
# vs the default user (+@all, which skips the check), redis-benchmark -c 50
# at -P 16 and -P 1, A B A B with medians. Prints the ratio (restricted /
# default) last; the goal is >= 0.95.
# Usage: benches/acl_cost.sh [requests] [rounds]
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
ROUNDS=${2:-2}
build_release
P=$(free_port)
start_flagstaff "$P" "$WORK/acl"
redis-cli -p "$P" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null
redis-cli -p "$P" ACL SETUSER app on '>apppw' '~prod:*' '~canary:*' '~shared:*' +@connection +@flag-eval >/dev/null
redis-cli -p "$P" ACL SETUSER default '>adminpw' >/dev/null
printf '%-6s %14s %14s %7s\n' pipe default restricted ratio
ratio16=
for p in 16 1; do
    n=$N; [ "$p" = 1 ] && n=$((N / 4))
    a=(); b=()
    for _ in $(seq 1 "$ROUNDS"); do
        a+=("$(rps -p "$P" --user default -a adminpw -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
        b+=("$(rps -p "$P" --user app -a apppw -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
    done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
    r=$(python3 -c "print(f'{$mb/$ma:.3f}')")
    printf '%-6s %14s %14s %7s   (default runs: %s; restricted: %s)\n' "-P $p" "$ma" "$mb" "$r" "${a[*]}" "${b[*]}"
    [ "$p" = 16 ] && ratio16=$r
done
echo "ratio restricted/default at -P 16: $ratio16"
