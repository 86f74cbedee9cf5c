"""History checkers for the fault harness (cluster/soak.sh).

A history is a list of operations, each a dict with:
  f        'read' | 'write' | 'cas'
  type     'ok' | 'info' | 'fail'   (Jepsen's completion types; 'fail' CAS = a definite conflict)
  call     invoke time (seconds, monotonic)
  ret      completion time (float('inf') for 'info': it may take effect any time later)
  value    the value read or written
  version  the version read, or returned by a write
  expect   a CAS's expected version (IFVERSION)
  actual   a failed CAS's current version (from the CONFLICT error)

The register model is a flag: state (value, version); every applied write bumps
the version by one (FLAG.SET's reply), a CAS applies only at its expected version.

`linearizable` is Wing-Gong-Lowe search (Lowe's memoised variant) over one key;
`check_registers` splits a history by key first (P-compositionality: a history
of independent registers is linearizable iff each key's is). `brute_force` is the
oracle the unit test compares it with.
"""

import itertools

INF = float("inf")
INIT = (None, 0)


def step(state, op):
    """The register model: the state after `op`, or None when `op` cannot happen in `state`."""
    value, version = state
    f, kind = op["f"], op["type"]
    fills = op.get("fills")
    if fills is not None and f in ("write", "cas") and version + 1 <= fills[1] \
            and version + 1 not in fills[0] and (f == "write" or version == op["expect"]):
        return None if f == "write" else state
    if f == "read":
        return state if (op["value"], op["version"]) == state else None
    if f == "write":
        if op.get("version") is not None and op["version"] != version + 1:
            return None
        return (op["value"], version + 1)
    if f == "cas":
        if kind == "fail":
            return state if version == op["actual"] != op["expect"] else None
        if version != op["expect"]:
            # An unknown-outcome CAS may have been refused: a no-op then
            # (unless a read saw its value: then it happened).
            return state if kind == "info" and op.get("version") is None else None
        if op.get("version") is not None and op["version"] != version + 1:
            return None
        return (op["value"], version + 1)
    return None


def _prepare(ops):
    # Reads that never completed say nothing; failed writes never happened.
    out = []
    for op in ops:
        if op["type"] == "info" and op["f"] == "read":
            continue
        if op["type"] == "fail" and op["f"] != "cas":
            continue
        op = dict(op)
        if op["type"] == "info":
            op["ret"] = INF
        out.append(op)
    return out


class _Entry:
    __slots__ = ("op", "i", "call", "match", "prev", "next")

    def __init__(self, op, i, call):
        self.op, self.i, self.call = op, i, call
        self.match = self.prev = self.next = None


class GaveUp(Exception):
    """The search took more than its budget of steps (reported as a violation)."""


def linearizable(ops, init=INIT, budget=1_000_000):
    """True if the single-key history `ops` is linearizable (WGL search); raises GaveUp
    after `budget` steps (non-linearizable histories can take exponential time)."""
    ops = _prepare(ops)
    if not ops:
        return True
    events = []
    for i, op in enumerate(ops):
        # At equal times a call sorts before a return: treated as concurrent.
        events.append((op["call"], 0, i))
        events.append((op["ret"], 1, i))
    events.sort()
    head = _Entry(None, -1, False)
    calls = {}
    prev = head
    for _, kind, i in events:
        e = _Entry(ops[i], i, kind == 0)
        if kind == 0:
            calls[i] = e
        else:
            calls[i].match = e
        prev.next, e.prev = e, prev
        prev = e

    def lift(e):
        e.prev.next = e.next
        if e.next:
            e.next.prev = e.prev
        m = e.match
        m.prev.next = m.next
        if m.next:
            m.next.prev = m.prev

    def unlift(e):
        m = e.match
        m.prev.next = m
        if m.next:
            m.next.prev = m
        e.prev.next = e
        if e.next:
            e.next.prev = e

    state, done, cache, stack = init, 0, set(), []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > budget:
            raise GaveUp(f"gave up after {budget} steps")
        if entry.call:
            new = step(state, entry.op)
            if new is not None:
                key = (done | (1 << entry.i), new)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, done = new, done | (1 << entry.i)
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False
            entry, state = stack.pop()
            done &= ~(1 << entry.i)
            unlift(entry)
            entry = entry.next
    return True


def brute_force(ops, init=INIT):
    """Oracle: tries every subset of unknown-outcome ops and every order that respects real time."""
    ops = _prepare(ops)
    must = [o for o in ops if o["type"] != "info"]
    maybe = [o for o in ops if o["type"] == "info"]
    for k in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, k):
            todo = must + list(chosen)
            for order in itertools.permutations(todo):
                ok, state = True, init
                for a, b in itertools.combinations(range(len(order)), 2):
                    # b comes after a in this order: it must not have returned before a was called.
                    if order[b]["ret"] < order[a]["call"]:
                        ok = False
                        break
                if not ok:
                    continue
                for op in order:
                    state = step(state, op)
                    if state is None:
                        break
                if state is not None:
                    return True
    return False


def reduce(ops):
    """Shrinks one key's history without changing its verdict (values are unique):
    an unknown-outcome write whose value a read saw happened at that version; and
    when every version up to the highest one observed is explained by an op whose
    value is known, an unknown-outcome write nobody saw cannot have taken one of
    them, so it took none or came after every observation: it is dropped. Where
    versions are missing, only such writes that could have made one are kept: not
    those called after an op that saw a version at or above every gap returned."""
    seen = {}
    for op in ops:
        if op["f"] == "read" and op["type"] == "ok" and op["value"] is not None:
            seen[op["value"]] = op["version"]
    known, top = set(), 0
    out = []
    for op in ops:
        op = dict(op)
        if op["type"] == "info" and op["f"] in ("write", "cas") and op["value"] in seen:
            op["version"] = seen[op["value"]]
        out.append(op)
    for op in out:
        if op["f"] in ("read", "write", "cas") and op["type"] in ("ok", "info") and op.get("version") is not None:
            top = max(top, op["version"])
            if op["f"] != "read" or op["value"] is not None:
                known.add(op["version"])
        if op["type"] == "fail" and "actual" in op:
            top = max(top, op["actual"])
    gaps = [v for v in range(1, top + 1) if v not in known]
    # An op that returned before W was called and saw version >= g comes before W,
    # so W would take a version above g: W cannot fill gap g.
    seen_at = []
    for op in out:
        v = op.get("version") if op["type"] == "ok" else op.get("actual") if op["type"] == "fail" else None
        if v is not None:
            seen_at.append((op["ret"], v))
    seen_at.sort()
    best, highest = [], 0
    for ret, v in seen_at:
        highest = max(highest, v)
        best.append((ret, highest))

    def highest_seen_before(t):
        lo, hi = 0, len(best)
        while lo < hi:
            mid = (lo + hi) // 2
            if best[mid][0] < t:
                lo = mid + 1
            else:
                hi = mid
        return best[lo - 1][1] if lo else 0

    def may_fill_a_gap(op):
        floor = highest_seen_before(op["call"])
        return any(g > floor for g in gaps)

    kept = []
    for op in out:
        if op["type"] == "info" and op.get("version") is None:
            if not may_fill_a_gap(op):
                continue
            # It can only take a missing version (or one above every observation).
            op["fills"] = (frozenset(gaps), top)
        kept.append(op)
    return kept


def check_registers(history, budget=1_000_000):
    """Per-key linearizability (P-compositionality); returns (key, why) for each key that fails."""
    by_key = {}
    for op in history:
        by_key.setdefault(op["key"], []).append(op)
    bad = []
    for key, ops in sorted(by_key.items()):
        try:
            if not linearizable(reduce(ops), budget=budget):
                bad.append((key, "not linearizable"))
        except GaveUp as e:
            bad.append((key, f"checker {e}"))
    return bad


def check_set(adds, final_reads):
    """The set workload: every acknowledged add is in every node's final read, and no
    add refused with a definite error is. `final_reads` maps node -> set of keys."""
    problems = []
    ok = {a["value"] for a in adds if a["type"] == "ok"}
    failed = {a["value"] for a in adds if a["type"] == "fail"}
    for node, seen in sorted(final_reads.items()):
        lost = ok - seen
        if lost:
            problems.append(f"node {node}: {len(lost)} acknowledged adds missing, e.g. {sorted(lost)[:3]}")
        ghosts = failed & seen
        if ghosts:
            problems.append(f"node {node}: {len(ghosts)} adds refused as definite failures are present, e.g. {sorted(ghosts)[:3]}")
    return problems


def check_events(sessions, final_versions, *, complete):
    """Change notifications. `sessions` is a list of (label, events, resync_points): the events
    one connection received in order, each (revision, seq, key, version). Within a session:
    ids strictly increase (ordered, unique), revisions never go back, and each key's version
    goes up by exactly one (no gap, no duplicate) except right after a resync point.
    With `complete`, a session must end at every key's final version."""
    problems = []
    for label, events, resyncs in sessions:
        last_id = last_rev = None
        versions = {}
        for n, (rev, seq, key, ver) in enumerate(events):
            if n in resyncs:
                versions = {}
            if seq is not None:
                if last_id is not None and (rev, seq) <= last_id:
                    problems.append(f"{label}: id {rev}-{seq} after {last_id[0]}-{last_id[1]} (order/duplicate)")
                last_id = (rev, seq)
            if last_rev is not None and rev < last_rev:
                problems.append(f"{label}: revision {rev} after {last_rev} (went back)")
            last_rev = rev
            prev = versions.get(key)
            if prev is not None and ver != prev + 1:
                what = "duplicate" if ver <= prev else "gap"
                problems.append(f"{label}: key {key} version {ver} after {prev} ({what})")
            versions[key] = ver
        if complete:
            for key, ver in final_versions.items():
                if key in versions and versions[key] != ver:
                    problems.append(f"{label}: key {key} ended at version {versions[key]}, final is {ver}")
    return problems
