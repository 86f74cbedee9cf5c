#!/usr/bin/env bash
# Online password guessing against a release build on loopback: an honest,
# already logged-in client PINGs once a millisecond, first alone, then while
# 100 connections pipeline 10,000 wrong AUTHs (all from 127.0.0.1, so they
# share one backoff record). Prints the honest client's p50/p99 in both
# phases, how many guesses the server decided (INFO acl_access_denied_auth)
# and the p99 ratio (under attack / quiet), last.
# Usage: benches/brute_force.sh [seconds-per-phase]
source "$(dirname "$0")/lib.sh"
SECS=${1:-5}
build_release
P=$(free_port)
start_flagstaff "$P" "$WORK/brute"
redis-cli -p "$P" ACL SETUSER default '>right' >/dev/null
python3 - "$P" "$SECS" <<'PY'
import socket, sys, threading, time

port, secs = int(sys.argv[1]), float(sys.argv[2])

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out

def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def line(s):
    buf = b""
    while not buf.endswith(b"\r\n"):
        buf += s.recv(1)
    return buf

honest = connect()
honest.sendall(resp("AUTH", "right"))
assert line(honest) == b"+OK\r\n"

def measure():
    samples, end = [], time.perf_counter() + secs
    while time.perf_counter() < end:
        t = time.perf_counter()
        honest.sendall(b"PING\r\n")
        assert honest.recv(7) == b"+PONG\r\n"
        samples.append(time.perf_counter() - t)
        time.sleep(0.001)
    samples.sort()
    at = lambda q: samples[int((len(samples) - 1) * q)] * 1e3
    return len(samples), at(0.5), at(0.99), samples[-1] * 1e3

def denied():
    honest.sendall(resp("INFO", "stats"))
    text = b""
    while b"acl_access_denied_channel" not in text:
        text += honest.recv(65536)
    for l in text.decode().splitlines():
        if l.startswith("acl_access_denied_auth:"):
            return int(l.split(":")[1])

quiet = measure()
before = denied()
guessers = [connect() for _ in range(100)]
started = time.perf_counter()
for c, g in enumerate(guessers):
    g.sendall(b"".join(resp("AUTH", "guess-%d-%d" % (c, i)) for i in range(100)))
attacked = measure()
decided = denied() - before
elapsed = time.perf_counter() - started
for name, (n, p50, p99, mx) in (("quiet", quiet), ("10,000 wrong AUTHs over 100 conns", attacked)):
    print(f"{name:<36} pings {n:>6}  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  max {mx:7.3f} ms")
print(f"guesses decided while measuring: {decided} of 10000 in {elapsed:.1f} s ({decided / elapsed:.0f} attempts/s)")
print(f"p99 ratio (under attack / quiet): {attacked[2] / quiet[2]:.2f}")
PY
