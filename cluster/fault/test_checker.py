"""Cross-checks the WGL linearizability checker against the brute-force oracle on
random small register histories (python3 cluster/fault/test_checker.py [COUNT] [SEED]).
Run by the compatibility suite (tests/compat/run.sh) with 100,000 histories."""

import random
import sys
import time

from checker import brute_force, check_events, check_set, linearizable, reduce

VALUES = ["a", "b", "c"]


def random_history(rng):
    """A few clients on one register: each op takes effect at a random point inside its
    interval (so the history is linearizable), then, half the time, one result is corrupted."""
    n = rng.randint(1, 6)
    ops = []
    t = 0.0
    for _ in range(n):
        t += rng.choice([0.0, 0.5, 1.0, 2.0])
        call = t + rng.random()
        ret = call + rng.choice([0.1, 1.0, 3.0, 6.0])
        ops.append({"key": "k", "call": call, "ret": ret, "at": rng.uniform(call, ret)})
    # Half the histories use unique values, as the harness does (reduce() relies on it).
    unique = rng.random() < 0.5
    fresh = iter(f"u{i}" for i in range(100))
    state = (None, 0)
    infos = 0
    for op in sorted(ops, key=lambda o: o["at"]):
        f = rng.choice(["read", "write", "cas"])
        value, version = state
        op["f"] = f
        op["type"] = "ok"
        if f == "read":
            op["value"], op["version"] = state
        elif f == "write":
            op["value"] = next(fresh) if unique else rng.choice(VALUES)
            state = (op["value"], version + 1)
            op["version"] = version + 1
        else:
            op["value"] = next(fresh) if unique else rng.choice(VALUES)
            op["expect"] = rng.choice([version, version, max(0, version - 1), version + 1])
            if op["expect"] == version:
                state = (op["value"], version + 1)
                op["version"] = version + 1
            else:
                op["type"], op["actual"] = "fail", version
        if f != "read" and infos < 2 and rng.random() < 0.2:
            infos += 1
            op["type"] = "info"  # no reply: neither a version nor a conflict
            op.pop("version", None)
            op.pop("actual", None)
    if rng.random() < 0.5:
        op = rng.choice(ops)
        field = rng.choice(["value", "version", "actual", "expect"])
        if field in op:
            if field == "value":
                op[field] = rng.choice(VALUES + [None])
            else:
                op[field] = op[field] + rng.choice([-1, 1])
    for op in ops:
        del op["at"]
    return ops, unique


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    rng = random.Random(seed)
    start = time.time()
    yes = no = 0
    for i in range(count):
        h, unique = random_history(rng)
        a, b = linearizable(h), brute_force(h)
        c = linearizable(reduce(h)) if unique else b
        if a != b or c != b:
            print(f"MISMATCH at history {i} (seed {seed}): wgl={a} reduced={c} oracle={b}")
            for op in h:
                print("  ", op)
            sys.exit(1)
        yes, no = yes + a, no + (not a)
    # The non-history checkers on hand-made cases.
    assert check_events([("s", [(1, 0, "k", 1), (2, 0, "k", 2)], set())], {"k": 2}, complete=True) == []
    assert check_events([("s", [(1, 0, "k", 1), (3, 0, "k", 3)], set())], {}, complete=False)
    assert check_events([("s", [(2, 0, "k", 2), (1, 0, "j", 1)], set())], {}, complete=False)
    assert check_events([("s", [(1, 0, "k", 1), (1, 0, "k", 1)], set())], {}, complete=False)
    assert check_events([("s", [(1, 0, "k", 1), (9, 0, "k", 7)], {1})], {}, complete=False) == []
    assert check_set([{"value": "x", "type": "ok"}], {1: set()})
    assert check_set([{"value": "x", "type": "fail"}], {1: {"x"}})
    print(f"checker: {count} random histories, WGL agrees with brute force "
          f"(also after reduce(); {yes} linearizable, {no} not) in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
