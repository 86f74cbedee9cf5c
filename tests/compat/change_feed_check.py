"""Change feed with redis-py 8: pub/sub events and examples/local_cache.py
catching up across a server restart.
Usage: change_feed_check.py PORT FLAGSTAFF_BIN DATA_DIR SERVER_PID"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from local_cache import LocalFlags  # noqa: E402

FLAG = {"on": True, "variations": [{"name": "a", "value": 1}, {"name": "b", "value": 2}],
        "off_variation": "a", "fallthrough": {"variation": "b"}}


def wait_pong(r):
    for _ in range(200):
        try:
            if r.ping():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not come back")


def main(port, binary, data_dir, server_pid):
    r = redis.Redis(port=port, decode_responses=True)
    # Pub/sub: a pattern subscriber sees the change event.
    p = r.pubsub()
    p.psubscribe("flag:feed:*")
    assert p.get_message(timeout=2)["type"] == "psubscribe"
    r.execute_command("FLAG.SET", "feed:one", json.dumps(FLAG))
    msg = p.get_message(timeout=5)
    while msg and msg["type"] != "pmessage":
        msg = p.get_message(timeout=5)
    event = json.loads(msg["data"])
    assert event["event"] == "set" and event["key"] == "feed:one" and event["version"] == 1, event
    p.close()

    # The local cache follows the stream across a restart of the server.
    cache = LocalFlags(port=port)
    cache.load()
    stop = threading.Event()
    follower = threading.Thread(target=cache.follow, kwargs={"stop": stop, "block_ms": 200}, daemon=True)
    follower.start()
    for i in range(50):
        r.execute_command("FLAG.SET", f"feed:k{i % 10}", json.dumps(FLAG))
    r.execute_command("FLAG.DEL", "feed:k9")
    try:
        r.execute_command("SHUTDOWN")
    except redis.ConnectionError:
        pass
    # Wait for the process to exit (it releases the data dir last).
    for _ in range(300):
        if not os.path.exists(f"/proc/{server_pid}") or open(f"/proc/{server_pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.05)
    server = subprocess.Popen([binary, "--port", str(port), "--http-port", "0", "--data-dir", data_dir, "--log-level", "warn"])
    try:
        wait_pong(r)
        for i in range(20):
            r.execute_command("FLAG.TOGGLE", f"feed:k{i % 9}", "OFF" if i % 2 else "ON")
        expected = json.loads(r.execute_command("FLAG.DUMP"))
        deadline = time.time() + 10
        while time.time() < deadline:
            with cache.lock:
                same = {k: v for k, v in cache.flags.items()} == expected["flags"]
            if same:
                break
            time.sleep(0.1)
        assert same, "the cache did not converge to the server's flags"
        assert "feed:k9" not in cache.flags
        stop.set()
        print(f"change feed ok ({cache.changes} changes followed, restart included)")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
