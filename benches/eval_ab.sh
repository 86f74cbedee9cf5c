#!/usr/bin/env bash
# FLAG.EVAL throughput of two flagstaff binaries, A B A B..., on the flag
# and contexts of compare.sh, redis-benchmark -c 50 -P 16 (and -P 1); one
# server per binary, both kept running. Prints medians and the ratio B/A last.
# Usage: benches/eval_ab.sh BIN_A BIN_B [requests] [rounds]
# (build A from an older commit with `cargo build --release` and copy it away).
source "$(dirname "$0")/lib.sh"
A=$1; B=$2; N=${3:-1000000}; ROUNDS=${4:-3}
PA=$(free_port); PB=$(free_port)
BIN="$A" start_flagstaff "$PA" "$WORK/a"
BIN="$B" start_flagstaff "$PB" "$WORK/b"
for p in "$PA" "$PB"; do redis-cli -p "$p" FLAG.SET prod:checkout "$BENCH_FLAG" >/dev/null; done
ratio16=
for p in 16 1; do
    n=$N; [ "$p" = 1 ] && n=$((N / 4))
    a=(); b=()
    for _ in $(seq 1 "$ROUNDS"); do
        a+=("$(rps -p "$PA" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
        b+=("$(rps -p "$PB" -c 50 -P "$p" -n "$n" -r 100000 FLAG.EVAL prod:checkout "$BENCH_CTX")")
    done
    ma=$(median "${a[@]}"); mb=$(median "${b[@]}")
    r=$(python3 -c "print(f'{$mb/$ma:.3f}')")
    printf -- '-P %-3s A %10s  B %10s  B/A %s   (A: %s; B: %s)\n' "$p" "$ma" "$mb" "$r" "${a[*]}" "${b[*]}"
    [ "$p" = 16 ] && ratio16=$r
done
echo "ratio B/A at -P 16: $ratio16"
