"""One seeded fault scenario against a flagstaff cluster in network namespaces.

    python3 cluster/fault/driver.py --row ROW --seed N --bin PATH --dir DIR [--seconds S]

Topology: a hub namespace holds a bridge (10.77.0.254, where this driver's clients
live); node i runs in its own namespace at 10.77.0.i, linked to the bridge by a veth
pair. nftables rules inside a node's namespace cut, thin or one-way-drop its links to
peers (clients keep reaching every node, as in Jepsen). Every namespace (and with it
every veth and rule) is deleted on exit, on error and on SIGINT/SIGTERM.

Workloads run during the faults, every request recorded with invoke/completion:
registers (FLAG.SET / FLAG.SET IFVERSION as CAS / RAFT.BARRIER + FLAG.GET), a set of
distinct keys (final read on every node), and change notifications (PSUBSCRIBE and
XREAD on every node). After healing, the driver checks per-key linearizability,
the set, the notifications, and that every node holds the same applied index and
state hash. It prints one JSON line: row, seed, ops, faults, violations, details,
and timings (election after isolation, heal convergence, catch-up).
"""

import argparse
import ctypes
import faulthandler
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checker import check_events, check_registers, check_set  # noqa: E402
from resp import Conn, RespError  # noqa: E402

PASSWORD = "fault-harness"
SECRET = "fault-harness-cluster-secret"
PORT, BUS = 6390, 16390
VOTERS, TOTAL = 3, 4
REG_KEYS = ["reg:0", "reg:1", "reg:2"]
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
ROWS = [
    "partition-leader", "partition-minority", "partition-ring", "partition-oneway",
    "flapping", "loss", "kill", "pause", "pause-leader", "clock", "membership",
    "lagging", "quorum-loss", "notifications", "power-cut", "bitflip", "delay", "reorder",
]
# Rows that need the test build's bus chaos layer (cargo feature `chaos`).
CHAOS_ROWS = ("delay", "reorder")
# openraft gives each append one heartbeat interval (100 ms): a delay must stay below it.
PROBE_DELAY_MS = 60


def die_with_parent():
    """In a node's child process: SIGKILL it if the driver dies (even by SIGKILL)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def now():
    return time.monotonic()


def ip(node):
    return f"10.77.0.{node}"


def run(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def definition(value):
    return json.dumps({
        "on": True,
        "variations": [{"name": "v", "value": value}, {"name": "off", "value": "off"}],
        "off_variation": "off",
        "fallthrough": {"variation": "v"},
    })


WAL_MAGIC = b"FSW\xffAL2\n"


def last_record(segment):
    """Offset of the last whole record of a WAL segment (either format), or None."""
    off, pre = (len(WAL_MAGIC), 12) if segment.startswith(WAL_MAGIC) else (0, 8)
    last = None
    while off + pre + 1 <= len(segment):
        size = int.from_bytes(segment[off:off + 4], "little")
        if size == 0 or off + pre + size > len(segment):
            break
        last, off = off, off + pre + size
    return last


class Net:
    """The namespaces, the bridge and the nftables rules."""

    def __init__(self, prefix, nodes):
        self.prefix, self.nodes = prefix, nodes
        self.hub = f"{prefix}h"
        self.made = []

    def ns(self, n):
        return f"{self.prefix}n{n}"

    def setup(self):
        run("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        run("ip", "-n", self.hub, "link", "set", "lo", "up")
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "addr", "add", "10.77.0.254/24", "dev", "br0")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for n in self.nodes:
            self.add_node(n)
        # This process's sockets (and threads started from now on) live in the hub.
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.hub}", os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns into the hub namespace")
        os.close(fd)

    def add_node(self, n):
        ns = self.ns(n)
        run("ip", "netns", "add", ns)
        self.made.append(ns)
        run("ip", "link", "add", f"{self.prefix}v{n}", "netns", ns, "type", "veth",
            "peer", "name", f"p{n}", "netns", self.hub)
        run("ip", "-n", ns, "link", "set", f"{self.prefix}v{n}", "name", "eth0")
        run("ip", "-n", ns, "addr", "add", f"{ip(n)}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", self.hub, "link", "set", f"p{n}", "master", "br0")
        run("ip", "-n", self.hub, "link", "set", f"p{n}", "up")
        self.nft(n, "add table inet fault")
        self.nft(n, "add chain inet fault in { type filter hook input priority 0 ; }")
        self.nft(n, "add chain inet fault out { type filter hook output priority 0 ; }")

    def nft(self, n, rule):
        run("ip", "netns", "exec", self.ns(n), "nft", *rule.split())

    def heal(self):
        for n in self.nodes:
            self.nft(n, "flush chain inet fault in")
            self.nft(n, "flush chain inet fault out")

    def drop_from(self, dst, src, percent=100):
        """Packets from src stop (or `percent` of them stop) arriving at dst."""
        rule = f"add rule inet fault in ip saddr {ip(src)}"
        if percent < 100:
            rule += f" numgen random mod 100 < {percent}"
        self.nft(dst, rule + " drop")

    def cut(self, a, b):
        self.drop_from(a, b)
        self.drop_from(b, a)

    def isolate(self, n):
        for m in self.nodes:
            if m != n:
                self.cut(n, m)

    def partition(self, side):
        for a in side:
            for b in self.nodes:
                if b not in side:
                    self.cut(a, b)

    def teardown(self):
        for ns in reversed(self.made):
            run("ip", "netns", "del", ns, check=False)
        self.made = []


class Node:
    def __init__(self, n, harness):
        self.n, self.h = n, harness
        self.proc = None
        self.paused = False
        self.dir = os.path.join(harness.dir, f"n{n}")

    def start(self, learner=None):
        if learner is None:
            learner = self.n > VOTERS
        args = [self.h.bin, "--node-id", str(self.n), "--bind", ip(self.n), "--port", str(PORT),
                "--cluster-port", str(BUS), "--http-port", "0", "--cluster-secret", SECRET,
                "--requirepass", PASSWORD, "--data-dir", self.dir, "--log-level", "warn",
                "--snapshot-every", str(self.h.snapshot_every),
                "--audit-retention", "1000000"]
        if self.n != 1:
            args += ["--join", f"{ip(1)}:{PORT}"]
        if learner:
            args += ["--learner"]
        env = dict(os.environ)
        if self.h.faketime:
            env["LD_PRELOAD"] = FAKETIME_LIB
            env["FAKETIME_TIMESTAMP_FILE"] = self.clock_file()
            env["FAKETIME_NO_CACHE"] = "1"
            # The wall clock jumps and drifts; CLOCK_MONOTONIC never goes back on
            # Linux (faking it backwards just stalls every timer for the jump).
            env["DONT_FAKE_MONOTONIC"] = "1"
            if not os.path.exists(self.clock_file()):
                self.set_clock("+0 x1")
        log = open(os.path.join(self.h.dir, f"n{self.n}.log"), "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.h.net.ns(self.n)] + args,
                                     stdout=log, stderr=log, env=env, preexec_fn=die_with_parent)
        self.paused = False

    def set_chaos(self, links):
        """Delays/reorders this node's raft RPCs per peer (test build: src/chaos.rs
        re-reads the file every 100 ms); {} turns it off."""
        if not os.path.isdir(self.dir):
            return
        path = os.path.join(self.dir, "chaos.json")
        with open(path + ".tmp", "w") as f:
            json.dump({str(k): v for k, v in links.items()}, f)
        os.replace(path + ".tmp", path)

    def chaos_stats(self):
        try:
            with open(os.path.join(self.dir, "chaos.stats")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def clock_file(self):
        return os.path.join(self.h.dir, f"clock{self.n}")

    def set_clock(self, spec):
        with open(self.clock_file(), "w") as f:
            f.write(spec + "\n")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def pause(self):
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.signal(signal.SIGCONT)
        self.paused = False

    def conn(self, timeout=3.0):
        return Conn(ip(self.n), PORT, PASSWORD, timeout=timeout)

    def cmd(self, *args, timeout=3.0):
        c = self.conn(timeout)
        try:
            return c.call(*args)
        finally:
            c.close()

    def info(self):
        try:
            text = self.cmd("RAFT.INFO", timeout=1.0)
        except (OSError, RespError):
            return {}
        out = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out

    def wait_ready(self, seconds=60):
        end = now() + seconds
        while now() < end:
            if not self.alive():
                raise RuntimeError(f"node {self.n} exited; see {self.h.dir}/n{self.n}.log")
            try:
                if self.cmd("PING", timeout=1.0) == "PONG":
                    return
            except (OSError, RespError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"node {self.n} not ready after {seconds} s")


class Recorder:
    """A shared history, appended to by the workload threads."""

    def __init__(self):
        self.ops = []
        self.lock = threading.Lock()

    def add(self, op):
        with self.lock:
            self.ops.append(op)


def classify(err):
    """'fail' for a definite refusal (nothing happened), 'info' for an unknown outcome."""
    text = str(err)
    for definite in ("CLUSTERDOWN", "LOADING", "CONFLICT", "NOAUTH", "ERR", "WRONGPASS", "BUSY"):
        if text.startswith(definite):
            return "fail"
    return "info"


class Workload:
    def __init__(self, h):
        self.h = h
        self.stop = threading.Event()
        self.registers = Recorder()
        self.adds = Recorder()
        self.sessions = []
        self.sessions_lock = threading.Lock()
        self.threads = []
        self.counter = 0
        self.lock = threading.Lock()
        self.evals = Recorder()
        self.eval_only = False

    def unique(self, prefix):
        with self.lock:
            self.counter += 1
            return f"{prefix}{self.counter}"

    def start(self, clients=6):
        for c in range(clients):
            self.spawn(self.register_client, c)
        for c in range(2):
            self.spawn(self.set_client, c)
        for n in self.h.nodes:
            self.spawn(self.subscriber, n)
            self.spawn(self.stream_reader, n)

    def spawn(self, fn, arg):
        t = threading.Thread(target=fn, args=(arg,), daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def pick_node(self, rng):
        return rng.choice([n for n in self.h.nodes if n in self.h.members])

    def register_client(self, c):
        rng = random.Random(self.h.seed * 1000 + c)
        conn = None
        node = None
        seen = {}
        while not self.stop.is_set():
            if conn is None:
                node = self.pick_node(rng)
                try:
                    conn = self.h.node(node).conn(timeout=6.0)
                except (OSError, RespError):
                    conn = None
                    time.sleep(0.1)
                    continue
            key = rng.choice(REG_KEYS)
            f = rng.choice(["read", "read", "write", "cas"])
            op = {"key": key, "f": f, "node": node, "client": c, "call": now()}
            try:
                if f == "read":
                    try:
                        conn.call("RAFT.BARRIER", "TIMEOUT", "2000")
                    except RespError:
                        time.sleep(0.05)
                        continue  # no read index: the read does not happen
                    reply = conn.call("FLAG.GET", key)
                    if reply is None:
                        op["value"], op["version"] = None, 0
                    else:
                        doc = json.loads(reply)
                        op["value"], op["version"] = doc["variations"][0]["value"], doc["version"]
                    seen[key] = op["version"]
                elif f == "write":
                    op["value"] = self.unique("w")
                    op["version"] = conn.call("FLAG.SET", key, definition(op["value"]))
                else:
                    op["value"] = self.unique("c")
                    op["expect"] = seen.get(key, 0)
                    op["version"] = conn.call("FLAG.SET", key, definition(op["value"]),
                                              "IFVERSION", op["expect"])
                op["type"] = "ok"
            except RespError as e:
                op["type"] = classify(e)
                op["error"] = str(e)
                if str(e).startswith("CONFLICT"):
                    # "CONFLICT flag K is at version N, not M"
                    words = str(e).split()
                    try:
                        op["actual"] = int(words[words.index("version") + 1].rstrip(","))
                    except (ValueError, IndexError):
                        op["type"] = "info"
                    seen[key] = op.get("actual", 0)
                elif op["type"] == "fail":
                    time.sleep(0.05)
            except (OSError, ValueError, KeyError) as e:
                op["type"], op["error"] = "info", repr(e)
                conn.close()
                conn = None
            op["ret"] = now()
            if op["f"] == "read" and op["type"] != "ok":
                continue
            if op["f"] == "cas" and op["type"] == "fail" and "actual" not in op:
                op["f"] = "write-refused"
            self.registers.add(op)

    def set_client(self, c):
        rng = random.Random(self.h.seed * 1000 + 100 + c)
        conn = None
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = self.h.node(self.pick_node(rng)).conn(timeout=6.0)
                except (OSError, RespError):
                    conn = None
                    time.sleep(0.1)
                    continue
            value = self.unique(f"set:{c}:")
            op = {"value": value, "call": now()}
            try:
                conn.call("FLAG.SET", value, definition(value))
                op["type"] = "ok"
            except RespError as e:
                op["type"], op["error"] = classify(e), str(e)
                if op["type"] == "fail":
                    time.sleep(0.05)
            except OSError as e:
                op["type"], op["error"] = "info", repr(e)
                conn.close()
                conn = None
            op["ret"] = now()
            self.adds.add(op)

    def subscriber(self, n):
        """PSUBSCRIBE flag:* on node n; one session per connection (pub/sub forgets gaps)."""
        while not self.stop.is_set():
            events = []
            try:
                conn = self.h.node(n).conn(timeout=0.5)
                conn.send("PSUBSCRIBE", "flag:*")
                conn.read()
            except (OSError, RespError):
                time.sleep(0.2)
                continue
            with self.sessions_lock:
                self.sessions.append((f"node {n} pubsub", events, set(), "pubsub", n))
            while not self.stop.is_set():
                try:
                    msg = conn.read()
                except TimeoutError:
                    continue
                except OSError:
                    break
                if isinstance(msg, list) and len(msg) == 4 and msg[0] == "pmessage":
                    try:
                        e = json.loads(msg[3])
                        events.append((e["revision"], None, e["key"], e["version"]))
                    except (ValueError, KeyError):
                        pass
            conn.close()

    def stream_reader(self, n):
        """XREAD on node n from the start, resuming after every reconnect from the last id."""
        events, resyncs = [], set()
        with self.sessions_lock:
            self.sessions.append((f"node {n} stream", events, resyncs, "stream", n))
        last = "0-0"
        # Whether the last XREAD found nothing after `last`: the reader holds
        # every entry the node had stored.
        drained = False
        conn = None
        while True:
            if self.stop.is_set() and self.h.final_revision is not None:
                # Done once drained past the final revision: the last event
                # merely reaching it is not enough, as one revision holds the
                # events of every write applied in one batch, and COUNT may
                # end a reply inside it.
                if drained and int(last.split("-")[0]) >= self.h.final_revision:
                    break
                if now() > self.h.final_deadline:
                    break
            if conn is None:
                try:
                    conn = self.h.node(n).conn(timeout=3.0)
                except (OSError, RespError):
                    time.sleep(0.2)
                    continue
            try:
                reply = conn.call("XREAD", "COUNT", "500", "BLOCK", "500", "STREAMS",
                                  "flagstaff:changes", last)
            except RespError:
                drained = False
                time.sleep(0.2)
                continue
            except OSError:
                drained = False
                conn.close()
                conn = None
                continue
            drained = not reply
            if not reply:
                continue
            for entry_id, fields in reply[0][1]:
                d = dict(zip(fields[::2], fields[1::2]))
                last = entry_id
                if d.get("event") == "resync":
                    resyncs.add(len(events))
                    continue
                rev, seq = (int(x) for x in entry_id.split("-"))
                if d.get("kind") == "flag":
                    events.append((rev, seq, d["key"], int(d["version"])))
        if conn:
            conn.close()


class Harness:
    def __init__(self, args):
        self.row, self.seed, self.bin = args.row, args.seed, args.bin
        self.dir = args.dir
        self.seconds = args.seconds
        self.rng = random.Random(args.seed)
        self.nodes = list(range(1, TOTAL + 1))
        self.members = set(self.nodes)
        self.net = Net(f"fz{os.getpid() % 100000}", self.nodes)
        self.faketime = args.row == "clock"
        self.snapshot_every = 64 if args.row in ("lagging", "membership") else 10000
        self._nodes = {n: Node(n, self) for n in self.nodes}
        self.faults = 0
        self.violations = []
        self.timings = {}
        self.final_revision = None
        self.final_deadline = 0

    def node(self, n):
        return self._nodes[n]

    def voters(self):
        return [n for n in self.nodes if n <= VOTERS]

    def leader(self, among=None, seconds=10):
        end = now() + seconds
        while now() < end:
            for n in among or self.nodes:
                node = self.node(n)
                if node.alive() and not node.paused and node.info().get("role") == "leader":
                    return n
            time.sleep(0.05)
        return None

    def start_cluster(self):
        self.node(1).start()
        self.node(1).wait_ready()
        for n in self.nodes[1:]:
            self.node(n).start()
        for n in self.nodes[1:]:
            self.node(n).wait_ready(120)

    def log(self, text):
        print(f"[{self.row} seed={self.seed} t={now() - self.t0:5.1f}] {text}", file=sys.stderr, flush=True)

    # ---- faults -------------------------------------------------------------

    def measure_election(self, old, majority):
        t = now()
        while now() - t < 15:
            for n in majority:
                inf = self.node(n).info()
                if inf.get("role") == "leader" and n != old:
                    return now() - t
            time.sleep(0.05)
        return None

    def measure_minority_refusal(self, n, t):
        """Seconds from `t` until a write on the cut-off node n is refused (not hung)."""
        while now() - t < 10:
            try:
                self.node(n).cmd("FLAG.SET", "probe:minority", definition("p"), timeout=1.0)
            except RespError as e:
                if str(e).startswith("CLUSTERDOWN"):
                    return now() - t
            except OSError:
                pass
            time.sleep(0.05)
        return None

    def nemesis(self, stop_at):
        rng = self.rng
        row = self.row
        while now() < stop_at - 3:
            time.sleep(rng.uniform(0.3, 1.0) if row == "power-cut" else rng.uniform(1.0, 2.5))
            leader = self.leader(self.voters(), seconds=5)
            followers = [n for n in self.voters() if n != leader]
            self.faults += 1
            if row == "partition-leader" and leader:
                self.log(f"isolate leader {leader}")
                t = now()
                self.net.isolate(leader)
                e = self.measure_election(leader, followers)
                self.timings.setdefault("election_s", []).append(e)
                r = self.measure_minority_refusal(leader, t)
                self.timings.setdefault("minority_refuses_s", []).append(r)
                time.sleep(rng.uniform(1, 3))
                self.heal_and_time()
            elif row == "partition-minority":
                n = rng.choice(self.voters())
                self.log(f"isolate node {n} (minority)")
                self.net.isolate(n)
                time.sleep(rng.uniform(2, 5))
                self.heal_and_time()
            elif row == "partition-ring" and leader:
                # Leader and one follower cannot talk; the third voter sees both.
                other = rng.choice(followers)
                self.log(f"cut {leader}<->{other} only (bridge through the third)")
                self.net.cut(leader, other)
                time.sleep(rng.uniform(2, 5))
                self.heal_and_time()
            elif row == "partition-oneway" and leader:
                self.log(f"one-way: leader {leader}'s packets to everyone are dropped")
                for n in self.nodes:
                    if n != leader:
                        self.net.drop_from(n, leader)
                time.sleep(rng.uniform(2, 5))
                self.heal_and_time()
            elif row == "flapping":
                self.log("flapping partitions for 6 s")
                end = now() + 6
                while now() < end:
                    self.net.heal()
                    side = rng.sample(self.nodes, rng.randint(1, 2))
                    self.net.partition(side)
                    time.sleep(rng.uniform(0.2, 1.0))
                self.heal_and_time()
            elif row == "loss":
                pct = rng.randint(10, 30)
                self.log(f"{pct}% random loss on every peer link")
                for a in self.nodes:
                    for b in self.nodes:
                        if a != b:
                            self.net.drop_from(a, b, pct)
                time.sleep(rng.uniform(3, 6))
                self.heal_and_time()
            elif row == "kill":
                which = rng.choice(["one", "leader", "minority", "majority", "all"])
                victims = {"one": [rng.choice(self.nodes)], "leader": [leader or 1],
                           "minority": [rng.choice(self.voters())],
                           "majority": rng.sample(self.voters(), 2), "all": self.nodes}[which]
                self.log(f"SIGKILL {which}: {victims}")
                for n in victims:
                    self.node(n).kill()
                time.sleep(rng.uniform(0.5, 2))
                for n in victims:
                    self.node(n).start()
                for n in victims:
                    self.node(n).wait_ready(120)
            elif row == "pause":
                which = rng.choice(["leader", "minority", "majority", "all"])
                victims = {"leader": [leader or 1], "minority": [rng.choice(self.voters())],
                           "majority": rng.sample(self.voters(), 2), "all": self.nodes}[which]
                self.log(f"SIGSTOP {which}: {victims}")
                for n in victims:
                    self.node(n).pause()
                time.sleep(rng.uniform(1, 3))
                for n in victims:
                    self.node(n).resume()
            elif row == "pause-leader" and leader:
                self.log(f"SIGSTOP leader {leader} past the election timeout")
                self.node(leader).pause()
                e = self.measure_election(leader, followers)
                self.timings.setdefault("election_s", []).append(e)
                time.sleep(rng.uniform(0.5, 1.5))
                self.node(leader).resume()
                # The resumed old leader must step down.
                t = now()
                while now() - t < 10 and self.node(leader).info().get("role") == "leader":
                    time.sleep(0.05)
                if self.node(leader).info().get("role") == "leader":
                    others = [n for n in followers if self.node(n).info().get("role") == "leader"]
                    if others:
                        self.violations.append(f"resumed old leader {leader} still leads beside {others}")
                self.timings.setdefault("step_down_s", []).append(now() - t)
            elif row == "clock":
                n = rng.choice(self.nodes)
                spec = rng.choice(["+30s", "-30s", "+600s", "-600s", "+0 x2", "+0 x0.5", "+5s x1.5"])
                self.log(f"clock of node {n}: {spec}")
                self.node(n).set_clock(spec)
                time.sleep(rng.uniform(2, 4))
                self.node(n).set_clock("+0 x1")
            elif row == "membership":
                self.membership_fault(leader, followers)
            elif row == "lagging" and leader:
                self.lagging_fault(leader, followers)
            elif row == "quorum-loss":
                self.quorum_loss_fault(leader, followers)
            elif row == "notifications":
                kind = rng.choice(["partition", "restart", "kill"])
                n = rng.choice(self.nodes)
                self.log(f"notifications: {kind} node {n}")
                if kind == "partition":
                    self.net.isolate(n)
                    time.sleep(rng.uniform(1, 3))
                    self.heal_and_time()
                else:
                    if kind == "kill":
                        self.node(n).kill()
                    else:
                        self.node(n).signal(signal.SIGTERM)
                        self.node(n).proc.wait(timeout=30)
                    time.sleep(0.5)
                    self.node(n).start()
                    self.node(n).wait_ready(120)
            elif row == "power-cut":
                self.power_cut(rng)
            elif row == "bitflip" and followers:
                self.bitflip(rng.choice(followers), rng)
            elif row == "delay" and leader:
                self.delay_fault(leader, followers)
            elif row == "reorder":
                self.reorder_fault()
            else:
                self.faults -= 1

    def heal_and_time(self):
        """Heals the network; records how long until every node has applied what was
        committed anywhere at the moment of the heal (the load keeps running)."""
        self.net.heal()
        t = now()
        target = max(int(self.node(n).info().get("commit_index", "0") or 0) for n in self.members)
        while now() - t < 10:
            applied = [int(self.node(n).info().get("applied_index", "-1") or -1) for n in self.members]
            if min(applied) >= target:
                self.timings.setdefault("heal_s", []).append(now() - t)
                return
            time.sleep(0.05)
        self.timings.setdefault("heal_s", []).append(None)

    def state(self, n):
        """(applied index, hash of FLAG.DUMP) of node n, or None."""
        try:
            c = self.node(n).conn(timeout=3.0)
            try:
                dump = c.call("FLAG.DUMP")
                applied = None
                for line in c.call("RAFT.INFO").splitlines():
                    if line.startswith("applied_index:"):
                        applied = int(line.split(":")[1])
            finally:
                c.close()
        except (OSError, RespError, ValueError):
            return None
        doc = json.loads(dump)
        doc.pop("stream_id", None)
        doc.pop("revision", None)
        return applied, hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def converged(self, seconds, nodes=None):
        end = now() + seconds
        while now() < end:
            states = [self.state(n) for n in (nodes or sorted(self.members))]
            if None not in states and len(set(states)) == 1:
                return True
            time.sleep(0.1)
        return False

    def set_chaos(self, links_of):
        """links_of(a) -> {b: link} for every node a; waits for the nodes to read it."""
        for a in self.nodes:
            self.node(a).set_chaos(links_of(a))
        time.sleep(0.3)

    def barrier_ms(self, n, count=11):
        """Median milliseconds of `count` RAFT.BARRIERs on node n (None if none). On
        the leader each is a read index: one heartbeat round to a majority, no fsync."""
        took = []
        c = None
        try:
            c = self.node(n).conn(timeout=3.0)
            for _ in range(count):
                t = now()
                c.call("RAFT.BARRIER")
                took.append((now() - t) * 1000)
        except (OSError, RespError):
            pass
        finally:
            if c:
                c.close()
        took.sort()
        return took[len(took) // 2] if took else None

    def delay_fault(self, leader, followers):
        """Every raft RPC delayed, per link: a fixed part and jitter. First proves the
        layer delays: with PROBE_DELAY_MS on the leader's links a read index (a
        heartbeat round to a majority) cannot take less."""
        rng = self.rng
        base = self.barrier_ms(leader)
        self.set_chaos(lambda a: {b: {"delay_ms": PROBE_DELAY_MS} for b in self.nodes
                                  if b != a} if a == leader else {})
        delayed = self.barrier_ms(leader)
        self.timings.setdefault("barrier_ms_base", []).append(base)
        self.timings.setdefault("barrier_ms_delayed", []).append(delayed)
        if delayed is not None and delayed < PROBE_DELAY_MS:
            self.violations.append(f"the chaos layer did not delay: barriers on leader {leader} "
                                   f"took {delayed:.0f} ms with {PROBE_DELAY_MS} ms on its links")
        links = {(a, b): {"delay_ms": rng.randint(5, 40), "jitter_ms": rng.randint(0, 50)}
                 for a in self.nodes for b in self.nodes if a != b}
        self.log(f"delay on every link, e.g. {leader}->{followers[:1]}: "
                 f"{links.get((leader, followers[0])) if followers else None}")
        self.set_chaos(lambda a: {b: links[(a, b)] for b in self.nodes if b != a})
        time.sleep(rng.uniform(3, 6))
        self.set_chaos(lambda a: {})
        self.heal_and_time()

    def reorder_fault(self):
        """Raft RPCs held back on connections of their own and delivered late, after
        later ones (and after their sender gave up): stale appends, votes and answers."""
        rng = self.rng
        links = {(a, b): {"reorder_pct": rng.randint(10, 40), "hold_ms": rng.randint(150, 1000),
                          "jitter_ms": rng.randint(0, 30)}
                 for a in self.nodes for b in self.nodes if a != b}
        self.log("reorder on every link")
        self.set_chaos(lambda a: {b: links[(a, b)] for b in self.nodes if b != a})
        time.sleep(rng.uniform(3, 6))
        self.set_chaos(lambda a: {})
        self.heal_and_time()

    def chaos_totals(self):
        """The chaos layer's counters summed over the nodes; proves it acted."""
        totals = {}
        for n in self.nodes:
            for k, v in self.node(n).chaos_stats().items():
                totals[k] = totals.get(k, 0) + v
        self.timings["chaos"] = totals
        if self.row == "delay" and not totals.get("delayed"):
            self.violations.append(f"the chaos layer delayed nothing: {totals}")
        if self.row == "reorder" and not totals.get("late"):
            self.violations.append(f"the chaos layer delivered nothing late: {totals}")

    def membership_fault(self, leader, followers):
        rng = self.rng
        step = rng.choice(["promote-remove", "remove-readd"])
        part = rng.choice(followers) if followers else None
        if part:
            self.log(f"membership {step} while node {part} is isolated")
            self.net.isolate(part)
        try:
            if step == "promote-remove":
                self.node(leader or 1).cmd("RAFT.NODE", "PROMOTE", "4", timeout=20)
                self.log("promoted 4")
                self.node(leader or 1).cmd("RAFT.NODE", "REMOVE", "4", timeout=20)
                self.log("removed 4")
            else:
                self.node(leader or 1).cmd("RAFT.NODE", "REMOVE", "4", timeout=20)
                self.log("removed 4")
            self.members.discard(4)
            self.node(4).kill()
            shutil.rmtree(self.node(4).dir, ignore_errors=True)
        except (OSError, RespError) as e:
            self.log(f"membership change refused: {e}")
        if part:
            self.net.heal()
        if 4 not in self.members:
            self.node(4).start(learner=True)
            try:
                self.node(4).wait_ready(120)
                self.members.add(4)
            except RuntimeError as e:
                self.violations.append(f"re-adding node 4 failed: {e}")
        self.heal_and_time()

    def lagging_fault(self, leader, followers):
        lag = self.rng.choice(followers)
        self.log(f"node {lag} cut off until the leader compacts past it")
        self.net.isolate(lag)
        t = now()
        lag_last = int(self.node(lag).info().get("last_log_index", "0"))
        while now() - t < 30:
            snap = int(self.node(leader).info().get("snapshot_index", "0") or 0)
            if snap > lag_last + 1:
                break
            time.sleep(0.3)
        else:
            self.log("leader did not compact past the lagging node in 30 s")
        compacted = int(self.node(leader).info().get("snapshot_index", "0") or 0) > lag_last + 1
        self.net.heal()
        t = now()
        target = int(self.node(leader).info().get("commit_index", "0") or 0)
        while now() - t < 30:
            if int(self.node(lag).info().get("applied_index", "-1") or -1) >= target:
                break
            time.sleep(0.05)
        caught = int(self.node(lag).info().get("applied_index", "-1") or -1) >= target
        self.timings.setdefault("catch_up_s", []).append(now() - t if caught else None)
        self.timings.setdefault("compacted_past", []).append(compacted)
        if not caught:
            self.violations.append(f"lagging node {lag} did not catch up within 30 s")

    def quorum_loss_fault(self, leader, followers):
        """Two of three voters stop: every evaluation elsewhere answers, marked stale."""
        victims = self.rng.sample(self.voters(), 2)
        alive = [n for n in self.nodes if n not in victims]
        self.log(f"quorum loss: SIGSTOP {victims}; evaluating on {alive}")
        for n in victims:
            self.node(n).pause()
        t = now()
        evals = stale = empty = 0
        while now() - t < 4:
            for n in alive:
                try:
                    reply = self.node(n).cmd("FLAG.DETAIL", REG_KEYS[0], '{"key":"u1"}', timeout=2)
                except (OSError, RespError) as e:
                    if now() - t > 1.5:
                        empty += 1
                        evals += 1
                        self.violations.append(f"quorum loss: node {n} did not evaluate: {e}")
                    continue
                if now() - t < 1.5:  # --stale-after-ms 1000 plus margin
                    continue
                evals += 1
                d = dict(zip(reply[::2], reply[1::2])) if isinstance(reply, list) else {}
                if d.get("value") in (None, "", "null"):
                    empty += 1
                if str(d.get("stale")).lower() in ("1", "true"):
                    stale += 1
            time.sleep(0.1)
        for n in victims:
            self.node(n).resume()
        self.timings.setdefault("stale_evals", []).append(f"{stale}/{evals}")
        if evals and stale != evals:
            self.violations.append(f"quorum loss: {evals - stale} of {evals} evaluations not marked stale")
        if empty:
            self.violations.append(f"quorum loss: {empty} evaluations empty")
        self.heal_and_time()

    def power_cut(self, rng):
        """SIGUSR2 makes a power-cut build drop every unsynced byte and exit; then restart."""
        victims = [rng.choice(self.nodes)] if rng.random() < 0.5 else list(self.nodes)
        self.log(f"power cut: {victims}")
        for n in victims:
            self.node(n).signal(signal.SIGUSR2)
        for n in victims:
            try:
                self.node(n).proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.node(n).kill()
        self.timings.setdefault("cuts", []).append(len(victims))
        time.sleep(0.3)
        for n in victims:
            self.node(n).start()
        for n in victims:
            self.node(n).wait_ready(120)

    def bitflip(self, n, rng):
        """A damaged disk on follower n: one digit of a set key in its WAL flips and its
        sled tree is lost, so the log is replayed. A checked checksum must refuse the
        damaged record (the node then re-fetches from the leader); the node must never
        serve the altered key."""
        import glob
        import re
        self.node(n).kill()
        segs = sorted(glob.glob(os.path.join(self.node(n).dir, "wal", "*.wal")))
        if not segs:
            self.faults -= 1
            self.node(n).start()
            self.node(n).wait_ready(120)
            return
        path = segs[-1]
        with open(path, "rb") as f:
            data = bytearray(f.read())
        spots = [m.start(1) for m in re.finditer(rb"set:\d+:(\d)", bytes(data))]
        last = last_record(data)
        if last is not None and rng.random() < 0.5:
            # The last record's length now reaches past the end of the file: a torn
            # tail if the length cannot be checked (src/raft/wal.rs).
            data[last + 3] ^= 0x10
            with open(path, "wb") as f:
                f.write(data)
            self.timings.setdefault("length_flips", []).append(n)
            self.log(f"bitflip: node {n} {os.path.basename(path)} length of its last record "
                     f"(offset {last}); sled tree lost")
        elif spots:
            at = rng.choice(spots[len(spots) // 2:])
            data[at] = ord("0") + (data[at] - ord("0") + 1) % 10
            with open(path, "wb") as f:
                f.write(data)
            self.log(f"bitflip: node {n} {os.path.basename(path)} offset {at}; sled tree lost")
        shutil.rmtree(os.path.join(self.node(n).dir, "state"), ignore_errors=True)
        self.node(n).start()
        try:
            self.node(n).wait_ready(120)
        except RuntimeError as e:
            # Refusing to start on a damaged log is a safe answer; rebuild the node from the leader.
            self.log(f"node {n} refused its damaged data: {e}")
            self.timings.setdefault("refused_damaged", []).append(n)
            leader = self.leader([m for m in self.voters() if m != n], seconds=10)
            try:
                self.node(leader or 1).cmd("RAFT.NODE", "REMOVE", str(n), timeout=20)
            except (OSError, RespError) as err:
                self.violations.append(f"removing damaged node {n} failed: {err}")
            shutil.rmtree(self.node(n).dir, ignore_errors=True)
            self.node(n).start()
            self.node(n).wait_ready(120)
            self.log(f"node {n} rebuilt from the cluster")

    # ---- the run ------------------------------------------------------------

    def run(self):
        self.t0 = now()
        os.makedirs(self.dir, exist_ok=True)
        self.net.setup()
        self.start_cluster()
        self.log("cluster up")
        w = Workload(self)
        w.start()
        stop_at = now() + self.seconds
        self.nemesis(stop_at)
        while now() < stop_at:
            time.sleep(0.2)
        # Heal everything, bring every node back, stop the load.
        self.net.heal()
        if self.row in CHAOS_ROWS:
            self.set_chaos(lambda a: {})
            self.chaos_totals()
        for n in self.nodes:
            node = self.node(n)
            if n in self.members:
                if not node.alive():
                    node.start()
                node.resume()
                if self.faketime:
                    node.set_clock("+0 x1")
        w.stop.set()
        for t in w.threads[:8]:
            t.join(timeout=15)
        for n in sorted(self.members):
            self.node(n).wait_ready(120)
        t = now()
        ok = self.converged(30)
        self.timings["final_converge_s"] = now() - t if ok else None
        if not ok:
            states = {n: self.state(n) for n in sorted(self.members)}
            self.violations.append(f"nodes did not converge within 30 s: {states}")
        # Final reads.
        final_versions = {}
        finals = {}
        final_revision = 0
        for n in sorted(self.members):
            dump, error, end = None, None, now() + 30
            while dump is None and now() < end:
                # A definite refusal (an election after the last restart) is retried.
                try:
                    c = self.node(n).conn(timeout=10)
                    try:
                        c.call("RAFT.BARRIER")
                        dump = json.loads(c.call("FLAG.DUMP"))
                    finally:
                        c.close()
                except (OSError, RespError, ValueError) as e:
                    error = e
                    time.sleep(0.2)
            if dump is None:
                self.violations.append(f"final read on node {n} failed for 30 s: {error}")
                continue
            flags = dump.get("flags", {})
            if isinstance(flags, list):
                flags = {f.get("key"): f for f in flags}
            finals[n] = {k for k in flags if k.startswith("set:")}
            for k, f in flags.items():
                final_versions[k] = f.get("version")
            revs = [f.get("revision", 0) for f in flags.values()]
            final_revision = max([final_revision, *revs])
        # Published only once every node has been read: a stream reader stops
        # when it reaches this revision, and a write still in flight when the
        # load stopped may land between two nodes' reads.
        self.final_deadline = now() + 20
        self.final_revision = final_revision
        w.finish()
        # Checks.
        for k, why in check_registers(w.registers.ops):
            self.violations.append(f"register {k}: {why}")
        self.violations += check_set(w.adds.ops, finals)
        sessions = [(label, ev, rs) for label, ev, rs, kind, n in w.sessions if kind == "pubsub"]
        self.violations += check_events(sessions, final_versions, complete=False)
        streams = [(label, ev, rs) for label, ev, rs, kind, n in w.sessions
                   if kind == "stream" and n in self.members]
        self.violations += check_events(streams, final_versions, complete=True)
        ops = len(w.registers.ops) + len(w.adds.ops)
        events = sum(len(s[1]) for s in w.sessions)
        self.dump_history(w)
        return {"row": self.row, "seed": self.seed, "ops": ops, "events": events,
                "faults": self.faults, "violations": len(self.violations),
                "details": self.violations[:20], "timings": self.timings,
                "ok_ops": sum(1 for o in w.registers.ops + w.adds.ops if o["type"] == "ok")}

    def dump_history(self, w):
        with open(os.path.join(self.dir, "history.jsonl"), "w") as f:
            for op in w.registers.ops:
                f.write(json.dumps(dict(op, workload="register"), default=str) + "\n")
            for op in w.adds.ops:
                f.write(json.dumps(dict(op, workload="set"), default=str) + "\n")

    def cleanup(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        for node in self._nodes.values():
            if node.proc and node.alive():
                node.resume()
                node.kill()
        self.net.teardown()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--row", required=True, choices=ROWS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()
    h = Harness(args)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <driver> prints every thread's stack
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = h.run()
    except Exception as e:  # noqa: BLE001 - reported as a harness error, not a pass
        result = {"row": args.row, "seed": args.seed, "ops": 0, "faults": h.faults,
                  "violations": 0, "error": repr(e), "details": []}
    finally:
        h.cleanup()
    print(json.dumps(result, default=str), flush=True)
    sys.exit(2 if "error" in result else (1 if result["violations"] else 0))


if __name__ == "__main__":
    main()
