"""redis-py with default settings against a 3-voter + 1-learner cluster:
writes on every node, read-your-writes across nodes with RAFT.BARRIER,
pub/sub across nodes, and RAFT.INFO as text.

Usage: cluster_check.py <port of node 1> ... <port of node 4>
"""
import json
import sys
import time

import redis

ports = [int(p) for p in sys.argv[1:]]
clients = [redis.Redis(port=p) for p in ports]

roles = []
for c in clients:
    info = c.execute_command("RAFT.INFO").decode()
    fields = dict(l.split(":", 1) for l in info.splitlines() if ":" in l)
    roles.append(fields["role"])
    assert c.info("replication")["role"] == "master"
assert sorted(roles) == ["follower", "follower", "leader", "learner"], roles

definition = lambda n: json.dumps({
    "on": True,
    "variations": [{"name": "n", "value": n}, {"name": "off", "value": -1}],
    "off_variation": "off",
    "fallthrough": {"variation": "n"},
})

for i, c in enumerate(clients):
    assert c.execute_command("FLAG.SET", f"py:node{i}", definition(i)) == 1
    # Read-your-writes on the node written to.
    assert c.execute_command("FLAG.EVAL", f"py:node{i}", '{"key":"u"}') == str(i).encode()
    # And on every other node after a read-index barrier.
    for other in clients:
        other.execute_command("RAFT.BARRIER")
        doc = json.loads(other.execute_command("FLAG.GET", f"py:node{i}"))
        assert doc["variations"][0]["value"] == i, doc

sub = clients[3].pubsub()
sub.subscribe("news", "flag:py:live")
deadline = time.time() + 5
while time.time() < deadline and sub.get_message(timeout=0.2) is not None:
    pass  # the subscribe confirmations
clients[0].publish("news", "from node 1")
clients[1].execute_command("FLAG.SET", "py:live", definition(42))
got = {}
while time.time() < deadline and len(got) < 2:
    m = sub.get_message(timeout=0.5)
    if m and m["type"] == "message":
        got[m["channel"].decode()] = m["data"]
assert got.get("news") == b"from node 1", got
assert json.loads(got["flag:py:live"])["definition"]["variations"][0]["value"] == 42, got

try:
    clients[2].execute_command("RAFT.NODE", "REMOVE", "99")
    raise AssertionError("removing a non-member must fail")
except redis.ResponseError as e:
    assert "not a member" in str(e), e
print("cluster: redis-py ok on", ports)
